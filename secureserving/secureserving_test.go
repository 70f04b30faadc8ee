/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package secureserving_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/open-local/open-local/secureserving"
)

// Plain HTTP serves anyone, so it is refused off loopback; unknown modes
// are refused. (Delegated serving is tested against a real API server with
// the real binaries in deploy/components_test.go.)
func TestServeHTTPRefusesPlainOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr, auth, wantErr string
	}{
		{":0", secureserving.AuthNone, "only on a loopback address"},
		{"0.0.0.0:0", secureserving.AuthNone, "only on a loopback address"},
		{"10.0.0.1:0", secureserving.AuthNone, "only on a loopback address"},
		{"[::]:0", secureserving.AuthNone, "only on a loopback address"},
		{"127.0.0.1:0", "", "want delegated or none"},
		{"127.0.0.1:0", "anonymous", "want delegated or none"},
		{"127.0.0.1:0", secureserving.AuthNone, ""},
		{"localhost:0", secureserving.AuthNone, ""},
	} {
		t.Run(tc.addr+" "+tc.auth, func(t *testing.T) {
			addr, err := secureserving.ServeHTTP(t.Context(), tc.addr, tc.auth, nil, nil, http.NotFoundHandler())
			if tc.wantErr == "" {
				if err != nil || addr == nil {
					t.Fatalf("ServeHTTP(%q, %q) = %v, %v", tc.addr, tc.auth, addr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ServeHTTP(%q, %q) = %v, want an error with %q", tc.addr, tc.auth, err, tc.wantErr)
			}
		})
	}
}
