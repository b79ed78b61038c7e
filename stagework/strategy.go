package stagework

// Strategies a profile may name. A strategy is the shape of a run's graph
// of steps; the profile file says it once and ParseConfig expands it into
// Profile.Stages (the steps, inputs before the steps that read them).
const (
	// StrategyChain is the four-stage chain Generator → Refiner → Validator
	// → Curator (the default).
	StrategyChain = "chain"
	// StrategyMoA is Mixture-of-Agents (arXiv 2406.04692): layers of
	// proposers, each layer after the first reading the previous layer's
	// answers, then an aggregator that synthesises the last layer's.
	StrategyMoA = "moa"
	// StrategyCouncil is an LLM council: members answer; each member ranks
	// the anonymised answers; a chairman writes the final answer from the
	// answers and the average ranking.
	StrategyCouncil = "council"
	// StrategyVote is self-consistency: N samples, then the majority answer
	// (short answers) or a judge's pick of the most consistent one
	// (universal self-consistency), given as the answer step.
	StrategyVote = "vote"
)

// Vote methods.
const (
	VoteMajority = "majority"
	VoteJudge    = "judge"
)

// Bounds on a strategy's shape: they keep a run's fan-out (and its bill)
// within reason and the anonymous labels within A–Z.
const (
	MaxParallel = 16 // proposers per layer, members, samples
	MaxLayers   = 4  // moa proposer layers
)

// StepOutput is one finished (or left-out) input step as a prompt sees it.
type StepOutput struct {
	// ID is the step's id ("p1.2", "m3", "s1").
	ID string
	// Role is the step's role.
	Role Stage
	// Model is the model that wrote Text.
	Model string
	// Label is the step's anonymous label in prompts that must not say who
	// wrote what ("A", "B", …): the council's members; "" otherwise.
	Label string
	// Text is the step's output ("" for a step left out).
	Text string
	// Reason says why a step was left out (failed, too slow); "" for a
	// finished one.
	Reason string
}

// RankEntry is one answer's place in an aggregate ranking.
type RankEntry struct {
	// ID is the ranked step's id; Label its anonymous label.
	ID, Label string
	// AverageRank is the mean of its places (1 = best) over the rankings
	// that could be parsed.
	AverageRank float64
	// Votes is how many rankings placed it.
	Votes int
}
