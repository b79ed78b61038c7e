package actors

// hedgeMinSamples: with fewer TTFTs of a model in its telemetry window, a
// hedge waits the default delay (Config.HedgeWait), not the model's p95.
const hedgeMinSamples = 8

// hedgeTick is a coordinator's timer to itself: the primary of attempt has
// had its p95 time to send a first token.
type hedgeTick struct {
	step    string
	attempt int32
}
