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
func TestStripedCounting(t *testing.T) {
	const mi, gi = int64(1) << 20, int64(1) << 30
	tests := []struct {
		name          string
		size          int64
		stripes, pvs  int
		wantStriped   int64 // StripedExtentRounded(size, 4Mi, stripes)
		wantWorstCase int64 // LVTake(size, 4Mi, true, pvs)
	}{
		// The case: 257 extents over 4 stripes is 4 × 65 = 260.
		{name: "4 stripes, 1Gi+1B", size: gi + 1, stripes: 4, pvs: 4, wantStriped: 260 * 4 * mi, wantWorstCase: 260 * 4 * mi},
		{name: "linear", size: gi + 1, stripes: 1, pvs: 1, wantStriped: 257 * 4 * mi, wantWorstCase: 257 * 4 * mi},
		// 256 extents fit 4 stripes exactly, but 3 (the agent may pick 3
		// when one PV is short) take 258: the worst case counts that.
		{name: "divisible by 4, not by 3", size: gi, stripes: 4, pvs: 4, wantStriped: gi, wantWorstCase: 258 * 4 * mi},
		// 257 extents: 3 stripes 258, 2 stripes 258, 4 stripes 260.
		{name: "worst over 1..4", size: gi + 1, stripes: 3, pvs: 4, wantStriped: 258 * 4 * mi, wantWorstCase: 260 * 4 * mi},
		{name: "one extent over 2 stripes", size: 1, stripes: 2, pvs: 2, wantStriped: 8 * mi, wantWorstCase: 8 * mi},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StripedExtentRounded(tt.size, 4*mi, tt.stripes); got != tt.wantStriped {
				t.Errorf("StripedExtentRounded = %d extents, want %d", got/(4*mi), tt.wantStriped/(4*mi))
			}
			if got := LVTake(tt.size, 4*mi, true, tt.pvs); got != tt.wantWorstCase {
				t.Errorf("LVTake = %d extents, want %d", got/(4*mi), tt.wantWorstCase/(4*mi))
			}
			if got := LVTake(tt.size, 4*mi, false, tt.pvs); got != ExtentRounded(tt.size, 4*mi) {
				t.Errorf("LVTake(linear) = %d, want ExtentRounded", got)
			}
		})
	}
}
