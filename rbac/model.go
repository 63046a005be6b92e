package rbac

import (
	_ "embed"
	"errors"
	"fmt"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
	fileadapter "github.com/casbin/casbin/v2/persist/file-adapter"
)

//go:embed models/rbac.conf
var rbacModel string

//go:embed models/rbac_with_domains.conf
var rbacWithDomainsModel string

// Model names one of the Casbin models embedded in this package. Both
// match objects and actions exactly (no keyMatch, no regex), so that a
// policy names route patterns such as "/accounts/{id}" and the decision
// cache stays bounded by patterns, not by raw paths. Both deny by default:
// a request is allowed only when some policy line grants it. The zero
// Model names no model: [NewEnforcer] rejects it with [ErrModel].
type Model int

const (
	// RBAC is the model "r = sub, obj, act" with a role hierarchy
	// "g = _, _": a subject (user or service) inherits the grants of its
	// roles, and roles inherit from roles.
	//
	//	p, role:teller, /accounts/{id}, GET
	//	g, role:admin, role:teller
	//	g, user:alice, role:admin
	RBAC Model = iota + 1
	// RBACWithDomains is the model "r = sub, dom, obj, act" with
	// "g = _, _, _": role grants and policy lines belong to one domain
	// (tenant), and a role held in one domain grants nothing in another.
	// Use it with [Config].Domain.
	//
	//	p, role:teller, tenant-a, /accounts/{id}, GET
	//	g, user:alice, role:teller, tenant-a
	RBACWithDomains
)

// String returns the model's name.
func (m Model) String() string {
	switch m {
	case RBAC:
		return "rbac"
	case RBACWithDomains:
		return "rbac-with-domains"
	default:
		return fmt.Sprintf("rbac.Model(%d)", int(m))
	}
}

// Text returns the model's Casbin CONF text, or "" for an unknown Model.
func (m Model) Text() string {
	switch m {
	case RBAC:
		return rbacModel
	case RBACWithDomains:
		return rbacWithDomainsModel
	default:
		return ""
	}
}

// ErrModel reports an unknown [Model] or a model text Casbin cannot parse.
var ErrModel = errors.New("rbac: invalid model")

// ErrPolicy reports a policy that cannot be loaded: a missing file, an
// adapter failure, or a line with the wrong number of fields.
var ErrPolicy = errors.New("rbac: invalid policy")

// NewEnforcer returns a Casbin enforcer for the embedded model m with the
// policy loaded from adapter a (a file adapter, a database adapter, any
// [persist.Adapter]). The enforcer is a [casbin.SyncedEnforcer], so
// [Middleware.Reload] may reload it while requests run. A policy line
// with the wrong number of fields fails the load.
func NewEnforcer(m Model, a persist.Adapter) (*casbin.SyncedEnforcer, error) {
	text := m.Text()
	if text == "" {
		return nil, fmt.Errorf("%w: unknown model %v", ErrModel, m)
	}
	if a == nil {
		return nil, fmt.Errorf("%w: nil adapter", ErrPolicy)
	}
	md, err := model.NewModelFromString(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	e, err := casbin.NewSyncedEnforcer(md, a)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return e, nil
}

// NewFileEnforcer is [NewEnforcer] with the policy read from the CSV file
// at path, one rule a line:
//
//	p, role:teller, /accounts/{id}, GET
//	g, user:alice, role:teller
//
// [Middleware.Reload] reads the file again.
func NewFileEnforcer(m Model, path string) (*casbin.SyncedEnforcer, error) {
	if path == "" {
		// Casbin's file adapter silently loads nothing for an empty path;
		// an empty policy is never what the caller meant.
		return nil, fmt.Errorf("%w: empty policy file path", ErrPolicy)
	}
	return NewEnforcer(m, fileadapter.NewAdapter(path))
}
