package v1alpha1

import (
	"math"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// No size, however hostile, counts as negative space.
func TestExtentRounded(t *testing.T) {
	for _, tc := range []struct {
		size, extent, want int64
	}{
		{0, 0, 0},
		{1, 0, DefaultExtentSize},
		{DefaultExtentSize, 0, DefaultExtentSize},
		{DefaultExtentSize + 1, 0, 2 * DefaultExtentSize},
		{1<<30 + 1, 1 << 30, 2 << 30},
		{5, -1, DefaultExtentSize},
		{-1, 0, MaxSize},
		{-200 << 30, 0, MaxSize}, // 2^64 − 200Gi, wrapped
		{math.MinInt64, 0, MaxSize},
		{MaxSize, 0, MaxSize},
		{MaxSize + 1, 0, MaxSize},
		{math.MaxInt64, 0, MaxSize},
		{math.MaxInt64 - 1, DefaultExtentSize, MaxSize},
		{1, math.MaxInt64, DefaultExtentSize},
	} {
		if got := ExtentRounded(tc.size, tc.extent); got != tc.want || got < 0 {
			t.Errorf("ExtentRounded(%d, %d) = %d, want %d", tc.size, tc.extent, got, tc.want)
		}
	}
}

func TestCountedSize(t *testing.T) {
	for _, tc := range []struct {
		size string
		want int64
	}{
		{"1Gi", 1 << 30},
		{"18446743858961186816", MaxSize}, // 2^64 − 200Gi: Value() is −200Gi
		{"9223372036854775808", MaxSize},  // 2^63
		{"1e30", MaxSize},
		{"-1Gi", MaxSize},
		{"0", MaxSize},
		{"1Ei", MaxSize},
	} {
		s := LocalVolumeSpec{VolumeType: VolumeTypeLVM, Size: resource.MustParse(tc.size)}
		if got := s.CountedSize(); got != tc.want {
			t.Errorf("CountedSize(%s) = %d, want %d", tc.size, got, tc.want)
		}
	}
}
