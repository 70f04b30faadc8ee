/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

// NameCasesForTest lists the names TestValidateNames checks whose verdict lvm
// itself can be asked about (see TestNameRulesAgreeWithLVM).
func NameCasesForTest() []string {
	var names []string
	for _, c := range nameCases {
		if c.lvmCheck {
			names = append(names, c.name)
		}
	}
	return names
}
