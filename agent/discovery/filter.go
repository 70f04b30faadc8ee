/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package discovery

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Filter returns the names that fully match at least one include expression
// and no exclude expression, sorted (open-local's listConfig semantics:
// nothing is selected unless included). An invalid expression is an error
// naming it; the result is then nil.
func Filter(names, include, exclude []string) ([]string, error) {
	inc, err := compileAll(include)
	if err != nil {
		return nil, err
	}
	exc, err := compileAll(exclude)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if matchAny(inc, n) && !matchAny(exc, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func compileAll(exprs []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(exprs))
	var bad []string
	for _, e := range exprs {
		// Compiled alone first, so "a)|(b" cannot escape the anchoring group.
		_, err := regexp.Compile(e)
		var re *regexp.Regexp
		if err == nil {
			// Anchored: "pool-1" must not select "pool-10".
			re, err = regexp.Compile(`^(?:` + e + `)$`)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%q: %v", e, strings.TrimPrefix(err.Error(), "error parsing regexp: ")))
			continue
		}
		res = append(res, re)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("invalid regular expression %s", strings.Join(bad, "; "))
	}
	return res, nil
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}
