/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// Images: every image is the host's root filesystem, so a pull only
// records the name (the kubelet's events still say Pulling/Pulled, and
// imagePullPolicy behaves as usual).

func imageID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (r *Runtime) image(ref string) *runtimeapi.Image {
	r.mu.Lock()
	defer r.mu.Unlock()
	if img, ok := r.images[ref]; ok {
		return img
	}
	for _, img := range r.images {
		if img.Id == ref {
			return img
		}
	}
	return nil
}

// ListImages lists the images pulled so far.
func (r *Runtime) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var imgs []*runtimeapi.Image
	for _, img := range r.images {
		imgs = append(imgs, img)
	}
	return &runtimeapi.ListImagesResponse{Images: imgs}, nil
}

// ImageStatus reports a pulled image, or none.
func (r *Runtime) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return &runtimeapi.ImageStatusResponse{Image: r.image(req.GetImage().GetImage())}, nil
}

// PullImage records the image.
func (r *Runtime) PullImage(_ context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	name := req.GetImage().GetImage()
	// The kubelet refuses an image of size 0; it has no content, so 1 byte.
	img := &runtimeapi.Image{Id: imageID(name), RepoTags: []string{name}, Spec: req.GetImage(), Size: 1}
	r.mu.Lock()
	r.images[name] = img
	r.mu.Unlock()
	klog.InfoS("Image pulled: it is the host's root filesystem", "image", name)
	return &runtimeapi.PullImageResponse{ImageRef: img.Id}, nil
}

// RemoveImage forgets the image.
func (r *Runtime) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	name := req.GetImage().GetImage()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, img := range r.images {
		if k == name || img.Id == name {
			delete(r.images, k)
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the filesystem of the state directory (images take
// no space; the kubelet's image GC and eviction need a real filesystem).
func (r *Runtime) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.opts.StateDir, &st); err != nil {
		return nil, err
	}
	usage := &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: r.opts.StateDir},
		UsedBytes:  &runtimeapi.UInt64Value{Value: 0},
		InodesUsed: &runtimeapi.UInt64Value{Value: 0},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{usage},
		ContainerFilesystems: []*runtimeapi.FilesystemUsage{usage}}, nil
}
