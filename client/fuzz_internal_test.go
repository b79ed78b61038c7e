package client

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
	"time"
)

// frames reads every frame of an SSE stream served by r.
func frames(r io.Reader) ([]frame, error) {
	rd := newSSEReader(r)
	var out []frame
	for {
		f, err := rd.nextFrame()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
		f.Data = append([]byte(nil), f.Data...)
		f.Received = time.Time{}
		out = append(out, f)
	}
}

// FuzzSSEFrames: an SSE stream parses to the same frames whether it
// arrives in one read, split in two at any byte, or one byte at a time.
func FuzzSSEFrames(f *testing.F) {
	f.Add([]byte("id: 1\nevent: token_delta\ndata: {\"seq\":1}\n\n"), 5)
	f.Add([]byte(": ping\n\nid: 2:10\r\ndata: a\r\ndata: b\r\n\r\n"), 12)
	f.Add([]byte("data: [DONE]\n\n"), 3)
	f.Add([]byte("data: x\nid"), 7)
	f.Add(append(append([]byte("data: "), bytes.Repeat([]byte("x"), 40<<10)...), "\n\n"...), 17000) // longer than the buffer
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		whole, errWhole := frames(bytes.NewReader(in))
		if cut < 0 {
			cut = -cut
		}
		cut %= len(in) + 1
		split, errSplit := frames(io.MultiReader(bytes.NewReader(in[:cut]), bytes.NewReader(in[cut:])))
		bytewise, errByte := frames(iotest.OneByteReader(bytes.NewReader(in)))
		if !reflect.DeepEqual(whole, split) || !reflect.DeepEqual(whole, bytewise) {
			t.Fatalf("frames differ:\nwhole %q\nsplit %q\nbytes %q", whole, split, bytewise)
		}
		if (errWhole == nil) != (errSplit == nil) || (errWhole == nil) != (errByte == nil) {
			t.Fatalf("errors differ: %v / %v / %v", errWhole, errSplit, errByte)
		}
	})
}

// FuzzParseChatChunk: no input panics; [DONE] is the end and nothing
// else; an error chunk is never content.
func FuzzParseChatChunk(f *testing.F) {
	f.Add("", []byte(`{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}`))
	f.Add("", []byte(`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`))
	f.Add("", []byte(`{"error":{"message":"x","code":7}}`))
	f.Add("error", []byte(`{"message":"x"}`))
	f.Add("", []byte(" [DONE] "))
	f.Fuzz(func(t *testing.T, event string, data []byte) {
		c, err := ParseChatChunk(event, data)
		if err != nil {
			return
		}
		if c.Done != (string(bytes.TrimSpace(data)) == "[DONE]") {
			t.Fatalf("done %v for %q", c.Done, data)
		}
		if c.Err != nil && (c.Content != "" || c.Usage != nil) {
			t.Fatalf("an error chunk with content: %+v", c)
		}
		if event == "error" && !c.Done && c.Err == nil {
			t.Fatalf("event: error not an error: %+v", c)
		}
	})
}
