package v1alpha1

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestFailureCode(t *testing.T) {
	for _, tc := range []struct {
		code string
		want codes.Code
	}{
		{"ResourceExhausted", codes.ResourceExhausted},
		{"NotFound", codes.NotFound},
		{"Unauthenticated", codes.Unauthenticated},
		{"OK", codes.Internal}, // a Failed status that says OK must not read as success
		{"", codes.Internal},
		{"resourceexhausted", codes.Internal},
		{"5", codes.Internal},
		{`Internal"`, codes.Internal},
		{"Bogus", codes.Internal},
	} {
		s := LocalVolumeStatus{Phase: PhaseFailed, Code: tc.code}
		if got := s.FailureCode(); got != tc.want {
			t.Errorf("FailureCode(%q) = %v, want %v", tc.code, got, tc.want)
		}
	}
}
