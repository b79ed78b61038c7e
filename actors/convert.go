package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// The stage numbering is shared: stagework.Stage values equal messages.Stage values.
func toMsgStage(s stagework.Stage) messages.Stage  { return messages.Stage(s) }
func toWorkStage(s messages.Stage) stagework.Stage { return stagework.Stage(s) }

// stageName is the stage's lower-case name ("generator"), as in JSON and metrics.
func stageName(s messages.Stage) string { return toWorkStage(s).String() }

func toMsgUsage(u stagework.Usage) *messages.Usage {
	return &messages.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens, Estimated: u.Estimated}
}

func fromMsgUsage(u *messages.Usage) stagework.Usage {
	return stagework.Usage{PromptTokens: u.GetPromptTokens(), CompletionTokens: u.GetCompletionTokens(), TotalTokens: u.GetTotalTokens(), Estimated: u.GetEstimated()}
}

func addUsage(a, b *messages.Usage) *messages.Usage {
	if a == nil {
		a = &messages.Usage{}
	}
	return &messages.Usage{
		PromptTokens:     a.GetPromptTokens() + b.GetPromptTokens(),
		CompletionTokens: a.GetCompletionTokens() + b.GetCompletionTokens(),
		TotalTokens:      a.GetTotalTokens() + b.GetTotalTokens(),
		Estimated:        a.GetEstimated() || b.GetEstimated(),
	}
}

func refOf(pid *actor.PID) *messages.ActorRef {
	if pid == nil {
		return nil
	}
	return &messages.ActorRef{Address: pid.Address, Id: pid.Id}
}

func pidOf(ref *messages.ActorRef) *actor.PID {
	if ref == nil || ref.Id == "" {
		return nil
	}
	return actor.NewPID(ref.Address, ref.Id)
}
