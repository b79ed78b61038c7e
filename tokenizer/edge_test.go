package tokenizer

import "strings"

// edgeCases are compared with the reference in TestSampleCorpus and seed the fuzzers.
var edgeCases = []string{
	"", "a", " ", "\n", "\x00", "\x7f", "a\x7fb", "\x00\x01\x7f", "hello\x00world\x7f",
	"\n   \n", "\n\t\n", "a \n  \n b", "  \t\n\r\n  foo  ", "x  ", "x \n", "\r\n\r\n", " \r\n x",
	"'s 'S 'RE 'ſ 'll 'LL 've 'Ve 'm 'd 't 'x", "don't I'LL they'RE we'Ve", "'sup", "''s", "'",
	"HelloWORLD ABCdef XMLHttpRequest camelCase iPhone", "ǅungla ǅ", "ʰello", "\u0301", "a\u0301b", "!\u0301", "\u0301A",
	"12345678", "1 22 333 4444", "١٢٣٤٥ ٦", "²³ ½", "Ⅻ", "𝟘𝟙𝟚𝟛",
	"\u00a0x", "\u3000日本", "\u2028\u2029", "\u0085x", "\v\fx", "\ufeffBOM", "a\u200bb",
	"日本語のテキスト", "مرحبا بالعالم", "שָׁלוֹם", "नमस्ते दुनिया", "สวัสดีครับ", "𠮷野家",
	"👨‍👩‍👧‍👦 👍🏽 🇩🇪 1️⃣ ❤️", "<|endoftext|> <|fim_prefix|>",
	"\xff\xfe bad", "\xe2\x82", "a\xc3", "\xf0\x9f\x98 x", "\xed\xa0\x80", "\xc0\xaf",
	"a/b//c/\n", "path/to/file.go:12", "{\"key\": [1, 2.5e-3, null], \"s\": \"x\\ny\"}",
	"```go\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n```\n", "# Title\n\n- item *bold* _it_\n",
	strings.Repeat(" ", 300) + "x", strings.Repeat("\n", 200), strings.Repeat("a", 300), strings.Repeat("ab", 200),
	strings.Repeat("7", 100), strings.Repeat("!?", 150), strings.Repeat("\t ", 100) + "\n",
}
