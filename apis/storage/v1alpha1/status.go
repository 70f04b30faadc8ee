package v1alpha1

import "google.golang.org/grpc/codes"

// FailureCode is the gRPC code a Failed status names (status.code: the
// code's String(), written by the agent), for the CSI answers that pass the
// failure on. A name that is not a gRPC code, and OK (a failure is never a
// success), give Internal.
func (s *LocalVolumeStatus) FailureCode() codes.Code {
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		if c.String() == s.Code {
			return c
		}
	}
	return codes.Internal
}
