package node

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLocalOnly: leave, fault rules and profiles answer only requests
// from this host, whatever http_addr is bound to.
func TestLocalOnly(t *testing.T) {
	h := localOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for remote, want := range map[string]int{
		"127.0.0.1:4000":        http.StatusNoContent,
		"127.3.2.1:4000":        http.StatusNoContent,
		"[::1]:4000":            http.StatusNoContent,
		"[::ffff:127.0.0.1]:80": http.StatusNoContent,
		"192.0.2.7:4000":        http.StatusForbidden,
		"[2001:db8::1]:4000":    http.StatusForbidden,
		"[::ffff:192.0.2.7]:80": http.StatusForbidden,
		"garbage":               http.StatusForbidden,
	} {
		r := httptest.NewRequest(http.MethodPost, "/cluster/leave", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("from %s: %d, want %d", remote, w.Code, want)
		}
	}
}
