/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Status is a step's outcome.
type Status string

// Step outcomes. NotImplemented counts as a failure: the demo never reports
// success it did not earn.
const (
	Pass           Status = "PASS"
	Fail           Status = "FAIL"
	NotImplemented Status = "NOT IMPLEMENTED"
	// Skipped: not run, as Config.SkipVM asked (never in make demo).
	Skipped Status = "SKIPPED"
)

// StepResult is one step of the walkthrough.
type StepResult struct {
	Number int           `json:"number"`
	Title  string        `json:"title"`
	Status Status        `json:"status"`
	Reason string        `json:"reason,omitempty"`
	Took   time.Duration `json:"took"`
	// Checks are what was verified, in order.
	Checks []string `json:"checks"`
}

// Report is what one demo run did; Up also writes it to <dir>/report.json.
type Report struct {
	Setup      time.Duration `json:"setup"`
	SetupError string        `json:"setupError,omitempty"`
	Steps      []StepResult  `json:"steps"`
	Total      time.Duration `json:"total"`
	Kubeconfig string        `json:"kubeconfig"`
}

// Passed reports whether the environment came up and every step passed.
func (r *Report) Passed() bool {
	if r.SetupError != "" || len(r.Steps) == 0 {
		return false
	}
	for _, s := range r.Steps {
		if s.Status != Pass {
			return false
		}
	}
	return true
}

// notImplementedError marks a step whose feature is missing from this tree.
type notImplementedError struct{ reason string }

func (e notImplementedError) Error() string { return e.reason }

func notImplemented(format string, args ...any) error {
	return notImplementedError{fmt.Sprintf(format, args...)}
}

type skippedError struct{ msg string }

func (e skippedError) Error() string { return e.msg }

func skipped(format string, args ...any) error {
	return skippedError{fmt.Sprintf(format, args...)}
}

// printer writes the progress report: numbered steps, what happens, the
// commands a user would type with their output, and each check.
type printer struct {
	w     io.Writer
	start time.Time
}

func (p *printer) printf(format string, args ...any) { fmt.Fprintf(p.w, format, args...) }

// section starts a step or the setup.
func (p *printer) section(title string) { p.printf("\n== %s\n", title) }

// say narrates what happens next.
func (p *printer) say(format string, args ...any) {
	p.printf("   %s\n", fmt.Sprintf(format, args...))
}

// command shows a command and its output, indented.
func (p *printer) command(cmd, output string) {
	p.printf("   $ %s\n", cmd)
	out := strings.TrimRight(output, "\n")
	if out == "" {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		p.printf("     %s\n", line)
	}
}

// check records a verified fact.
func (p *printer) check(res *StepResult, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	res.Checks = append(res.Checks, msg)
	p.printf("   ok   %s\n", msg)
}

func (p *printer) result(res *StepResult) {
	switch res.Status {
	case Pass:
		p.printf("   PASS step %d (%s)\n", res.Number, res.Took.Round(100*time.Millisecond))
	default:
		p.printf("   %s step %d (%s): %s\n", res.Status, res.Number, res.Took.Round(100*time.Millisecond), res.Reason)
	}
}

func (p *printer) summary(r *Report) {
	p.section("Summary")
	p.printf("   setup (control plane, node, open-local)      %8s%s\n", r.Setup.Round(100*time.Millisecond), failNote(r.SetupError))
	for _, s := range r.Steps {
		p.printf("   %d. %-40s %8s  %s\n", s.Number, s.Title, s.Took.Round(100*time.Millisecond), s.Status)
	}
	p.printf("   total %48s\n", r.Total.Round(100*time.Millisecond))
	passed := 0
	for _, s := range r.Steps {
		if s.Status == Pass {
			passed++
		}
	}
	verdict := "PASS"
	if !r.Passed() {
		verdict = "FAIL"
	}
	p.printf("   result: %d of 8 steps passed: %s\n", passed, verdict)
}

func failNote(err string) string {
	if err == "" {
		return ""
	}
	return "  FAIL: " + err
}

// stepError classifies a step's error.
func stepStatus(err error) Status {
	var ni notImplementedError
	var sk skippedError
	switch {
	case err == nil:
		return Pass
	case errors.As(err, &ni):
		return NotImplemented
	case errors.As(err, &sk):
		return Skipped
	default:
		return Fail
	}
}
