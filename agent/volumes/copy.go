/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// restoringTag marks an LV created to be filled by a block copy that has
// not finished. lvcreate sets it together with the LV and the copy removes
// it last, so after a crash the agent knows to copy again (the data is
// overwritten, never trusted half-done).
const restoringTag = "csi.aliyun.com/restoring"

// copyBufferSize is the unit of a block copy: large enough for sequential
// throughput, small enough to skip zero runs of a thin target finely.
const copyBufferSize = 4 << 20

// copyJob is one block copy running in the background.
type copyJob struct {
	source     string
	total      int64
	copied     atomic.Int64
	cancel     context.CancelFunc
	done       chan struct{}
	err        error // valid once done is closed
	wroteBytes atomic.Int64
}

func (j *copyJob) finished() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// copies are the block copies of this node, by LocalVolume name.
type copies struct {
	mu   sync.Mutex
	jobs map[string]*copyJob
}

func newCopies() *copies { return &copies{jobs: map[string]*copyJob{}} }

func (c *copies) get(name string) *copyJob {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.jobs[name]
}

func (c *copies) running(name string) bool {
	j := c.get(name)
	return j != nil && !j.finished()
}

// start runs a copy of total bytes from src to dst; wake is called when it ends.
func (c *copies) start(name, source, src, dst string, total int64, skipZeros bool, wake func()) *copyJob {
	ctx, cancel := context.WithCancel(context.Background())
	j := &copyJob{source: source, total: total, cancel: cancel, done: make(chan struct{})}
	c.mu.Lock()
	c.jobs[name] = j
	c.mu.Unlock()
	go func() {
		defer close(j.done)
		defer wake()
		j.err = copyBlocks(ctx, src, dst, total, skipZeros, j)
	}()
	return j
}

// forget drops a finished job.
func (c *copies) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.jobs, name)
}

// stop cancels name's copy and waits until it no longer writes.
func (c *copies) stop(name string) {
	c.mu.Lock()
	j := c.jobs[name]
	delete(c.jobs, name)
	c.mu.Unlock()
	if j != nil {
		j.cancel()
		<-j.done
	}
}

func (c *copies) stopAll() {
	c.mu.Lock()
	names := make([]string, 0, len(c.jobs))
	for n := range c.jobs {
		names = append(names, n)
	}
	c.mu.Unlock()
	for _, n := range names {
		c.stop(n)
	}
}

// copyBlocks copies the first total bytes of src to dst and syncs dst.
// Blocks of zeros are not written as data: with skipZeros (a fresh thin
// target, which reads zeros where nothing was written) not at all, so the
// copy stays thin; otherwise the device is asked to zero them.
func copyBlocks(ctx context.Context, src, dst string, total int64, skipZeros bool, j *copyJob) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, copyBufferSize)
	zeros := make([]byte, copyBufferSize)
	for off := int64(0); off < total; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), total-off))
		if _, err := io.ReadFull(io.NewSectionReader(in, off, int64(n)), buf[:n]); err != nil {
			return fmt.Errorf("read %s at %d: %w", src, off, err)
		}
		switch {
		case !bytes.Equal(buf[:n], zeros[:n]):
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write %s at %d: %w", dst, off, err)
			}
			j.wroteBytes.Add(int64(n))
		case skipZeros:
		case lvm.ZeroRange(out, off, int64(n)) == nil:
			// The device zeroes the range itself (WRITE ZEROES, or a hole
			// punched in a loop device's file): no data moves.
		default:
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write %s at %d: %w", dst, off, err)
			}
			j.wroteBytes.Add(int64(n))
		}
		off += int64(n)
		j.copied.Store(off)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	return nil
}

// restoreByCopy fills lv's new LV (at path) from its snapshot (a restore)
// or its source volume (a clone): it starts
// the copy, reports its progress while it runs, and marks the volume Ready
// once the data is on disk (the restoring tag removed last).
func (r *Reconciler) restoreByCopy(ctx context.Context, lv *v1alpha1.LocalVolume, got *lvm.LV, path string, src *restoreSource) error {
	vg, name := lv.Spec.VGName, lv.LVName()
	if src == nil {
		return r.fail(ctx, lv, codes.Internal, ReasonRestoreFailed,
			fmt.Errorf("LV %s/%s is tagged %s but the volume names no source", vg, name, restoringTag))
	}
	job := r.copies.get(lv.Name)
	if job == nil {
		srcPath, err := r.opts.Activator.Activate(ctx, src.origin.Spec.VGName, src.origin.LVName())
		if err != nil {
			return r.fail(ctx, lv, lvm.Code(err), ReasonRestoreFailed, fmt.Errorf("activate %s: %w", src, err))
		}
		total := min(src.size, int64(got.Size))
		job = r.copies.start(lv.Name, src.origin.Name, srcPath, path, total, got.IsThin(), func() { r.queue.Add(lv.Name) })
		klog.FromContext(ctx).Info("Restoring by block copy", "localVolume", lv.Name, "from", src.origin.Name, "bytes", total)
		r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonRestoreStarted, "Copying %s from %s into %s/%s",
			quantity(uint64(total)), src, vg, name)
	}
	progress := &v1alpha1.CopyStatus{Source: job.source, TotalBytes: job.total, CopiedBytes: job.copied.Load()}
	if !job.finished() {
		err := r.setStatus(ctx, lv, v1alpha1.LocalVolumeStatus{
			Phase: v1alpha1.PhasePending, ObservedGeneration: lv.Generation, Copy: progress,
			Message: fmt.Sprintf("filling from %s: %d%% copied", src, percent(progress.CopiedBytes, progress.TotalBytes)),
		})
		r.queue.AddAfter(lv.Name, r.opts.CopyProgress)
		return err
	}
	r.copies.forget(lv.Name)
	if job.err != nil {
		return r.fail(ctx, lv, codes.Internal, ReasonRestoreFailed, fmt.Errorf("copy from %s stopped after %s: %w (it starts again)",
			src, quantity(uint64(progress.CopiedBytes)), job.err))
	}
	if err := r.opts.LVM.RemoveTags(ctx, vg, name, restoringTag); err != nil {
		return r.fail(ctx, lv, lvm.Code(err), ReasonRestoreFailed, fmt.Errorf("mark %s/%s restored: %w", vg, name, err))
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	progress.CompletionTime = &now
	klog.FromContext(ctx).Info("Restored by block copy", "localVolume", lv.Name, "from", job.source, "bytes", progress.CopiedBytes, "written", job.wroteBytes.Load())
	r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonRestored, "Copied %s from %s", quantity(uint64(progress.CopiedBytes)), src)
	return r.setStatus(ctx, lv, v1alpha1.LocalVolumeStatus{
		Phase: v1alpha1.PhaseReady, DevicePath: path, ObservedGeneration: lv.Generation,
		CurrentSize: resource.NewQuantity(int64(got.Size), resource.BinarySI), Copy: progress,
	})
}

func percent(part, total int64) int64 {
	if total <= 0 {
		return 100
	}
	return part * 100 / total
}
