package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// LogCodeSender writes login codes to the node's log: the development
// default on loopback, where the operator is the user. It is the one place
// a code is logged.
func LogCodeSender(log *slog.Logger) CodeSender {
	return logSender{log: log.With("component", "codes")}
}

type logSender struct{ log *slog.Logger }

func (l logSender) SendCode(ctx context.Context, phone, code string) error {
	l.log.Info("login code", "phone", phone, "code", code)
	return nil
}

// WebhookTimeout bounds one webhook delivery, so a slow gateway cannot hold
// sign-in calls open.
const WebhookTimeout = 10 * time.Second

// WebhookCodeSender POSTs each code as JSON {"phone": ..., "code": ...} to
// url, the operator's SMS gateway. Any 2xx answer is success. The code is
// never logged, and errors do not quote the request. client may be nil for
// a client with WebhookTimeout.
func WebhookCodeSender(url string, client *http.Client) CodeSender {
	if client == nil {
		client = &http.Client{Timeout: WebhookTimeout}
	}
	return webhookSender{url: url, client: client}
}

type webhookSender struct {
	url    string
	client *http.Client
}

func (w webhookSender) SendCode(ctx context.Context, phone, code string) error {
	ctx, cancel := context.WithTimeout(ctx, WebhookTimeout)
	defer cancel()
	body, err := json.Marshal(struct {
		Phone string `json:"phone"`
		Code  string `json:"code"`
	}{phone, code})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
