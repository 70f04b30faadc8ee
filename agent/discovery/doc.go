/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package discovery turns what a node has (lvm's VGs, LVs and PVs, the block
// devices in sysfs) into NodeLocalStorage status: volume groups with the
// space open-local may allocate, devices, and the include/exclude filtered
// lists the scheduler reads. It computes; it neither runs commands (callers
// pass the lvm inventory) nor writes to the API.
package discovery
