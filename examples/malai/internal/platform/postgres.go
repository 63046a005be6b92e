package platform

import (
	"context"
	"errors"
	"os"
	"strings"
)

// PasswordFunc returns the role's password for every new connection,
// read from p.PasswordFile: a credential rotated by the secret store's
// agent is used without a restart. No file (or none configured) means no
// password (trust or certificate authentication).
func (p Postgres) PasswordFunc() func(context.Context) (string, error) {
	path := p.PasswordFile
	return func(context.Context) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", errors.New("database password file unreadable")
		}
		return strings.TrimSpace(string(b)), nil
	}
}
