//go:build race

package transport

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
