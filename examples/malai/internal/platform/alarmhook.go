package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/malai-sec/malai/correlation"
)

// AlarmHook says where an alarm's state changes go besides its log line
// and its gauge: a webhook, a command, or both. The zero value sends
// nowhere.
//
// Each change is one JSON object, [AlarmNotice]: POSTed to Webhook, or
// written to Command's standard input. Delivery runs beside the alarm
// (never in the request path), one change at a time in order, each with a
// ten-second deadline; a failed delivery is logged (without the URL,
// which may hold a token) and not retried; changes beyond a backlog of
// 16 are dropped with a log line.
type AlarmHook struct {
	// Webhook is an http or https URL.
	Webhook string
	// Command is a program and its arguments, run without a shell.
	Command []string
	// HTTPClient posts to Webhook (nil: a client with the host's roots).
	HTTPClient *http.Client
}

// AlarmNotice is the JSON an [AlarmHook] receives.
type AlarmNotice struct {
	Component  string    `json:"component"`
	Alarm      string    `json:"alarm"`
	Firing     bool      `json:"firing"`
	At         time.Time `json:"at"`
	Requests   int       `json:"requests"`
	Errors     int       `json:"errors"`
	ErrorRatio float64   `json:"error_ratio"`
}

// hookTimeout bounds one delivery.
const hookTimeout = 10 * time.Second

type alarmHook struct {
	component string
	cfg       AlarmHook
	log       *slog.Logger
	done      chan struct{}

	mu sync.Mutex
	ch chan correlation.AlarmEvent // nil: closed, or nowhere to send
}

func newAlarmHook(component string, cfg AlarmHook, log *slog.Logger) (*alarmHook, error) {
	if cfg.Webhook != "" {
		u, err := url.Parse(cfg.Webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("platform: the alarm webhook must be an http(s) URL")
		}
	}
	if cfg.Command != nil && (len(cfg.Command) == 0 || cfg.Command[0] == "") {
		return nil, errors.New("platform: empty alarm command")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: hookTimeout}
	}
	h := &alarmHook{component: component, cfg: cfg, log: log, done: make(chan struct{})}
	if cfg.Webhook == "" && cfg.Command == nil {
		close(h.done)
		return h, nil
	}
	h.ch = make(chan correlation.AlarmEvent, 16)
	go h.run(h.ch)
	return h, nil
}

// send queues ev for delivery; it never blocks (the alarm calls it under
// its lock).
func (h *alarmHook) send(ev correlation.AlarmEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		return
	}
	select {
	case h.ch <- ev:
	default:
		h.log.Warn("alarm hook backlog full; change not delivered", correlation.LogKeyAlarm, ev.Name, "firing", ev.Firing)
	}
}

func (h *alarmHook) run(ch <-chan correlation.AlarmEvent) {
	defer close(h.done)
	for ev := range ch {
		n := AlarmNotice{Component: h.component, Alarm: ev.Name, Firing: ev.Firing, At: ev.At.UTC(), Requests: ev.Requests, Errors: ev.Errors, ErrorRatio: ev.Ratio}
		body, _ := json.Marshal(n)
		if h.cfg.Webhook != "" {
			if err := h.post(body); err != nil {
				h.log.Warn("alarm webhook failed", correlation.LogKeyAlarm, ev.Name, "firing", ev.Firing, "error", err.Error())
			} else {
				h.log.Info("alarm webhook delivered", correlation.LogKeyAlarm, ev.Name, "firing", ev.Firing)
			}
		}
		if h.cfg.Command != nil {
			if err := h.run1(body); err != nil {
				h.log.Warn("alarm command failed", correlation.LogKeyAlarm, ev.Name, "firing", ev.Firing, "error", err.Error())
			} else {
				h.log.Info("alarm command ran", correlation.LogKeyAlarm, ev.Name, "firing", ev.Firing)
			}
		}
	}
}

func (h *alarmHook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), hookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return errors.New("bad request")
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := h.cfg.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry a token: keep it out of the log
		}
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode >= 300 {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

func (h *alarmHook) run1(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.cfg.Command[0], h.cfg.Command[1:]...)
	cmd.Stdin = bytes.NewReader(body)
	cmd.WaitDelay = time.Second
	return cmd.Run()
}

// close delivers what is queued and stops.
func (h *alarmHook) close() error {
	h.mu.Lock()
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
	h.mu.Unlock()
	<-h.done
	return nil
}

// checkOTLPEndpoint refuses an OTLP endpoint that is not an http(s) URL.
func checkOTLPEndpoint(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("platform: the OTLP endpoint must be an http(s) URL (http://127.0.0.1:4318)")
	}
	return nil
}

// otlpTracesURL is the traces URL of an OTLP endpoint: a base URL (no
// path) gets the signal's path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
func otlpTracesURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || strings.Trim(u.Path, "/") != "" {
		return s
	}
	u.Path = "/v1/traces"
	return u.String()
}
