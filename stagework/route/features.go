package route

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Cue words, lower case. A word counts once per occurrence; the phrase
// lists are matched as substrings of the lower-cased text.
var (
	codeWords = set("python", "javascript", "typescript", "golang", "rust", "java", "c++", "c#", "sql", "regex", "regexp",
		"compile", "compiler", "compiles", "debug", "segfault", "api", "json", "yaml", "git", "docker", "kubernetes", "k8s",
		"bash", "script", "npm", "exception", "async", "await", "goroutine", "goroutines", "mutex", "thread", "threads",
		"recursion", "recursive", "algorithm", "refactor", "lambda", "array", "hashmap", "pointer", "variable", "html",
		"css", "react", "django", "flask", "endpoint", "function", "struct", "class", "runtime", "deadlock", "nullpointerexception",
		"stacktrace", "traceback", "typeerror", "undefined", "null", "int", "string", "boolean", "linux", "kernel",
		"postgres", "postgresql", "mysql", "redis", "kafka", "grpc", "http", "cli", "shell", "powershell", "makefile",
		"cmake", "webpack", "dockerfile", "repo", "commit", "merge", "rebase", "o(n)", "big-o", "codebase", "unittest",
		"pytest", "pandas", "numpy", "dataframe", "spark", "terraform", "ansible", "nginx", "latency", "throughput", "cache",
		"microservices", "microservice", "database", "index", "schema", "orm", "binary", "compiler's", "código", "programm")
	codePhrases = []string{"null pointer", "stack trace", "unit test", "pull request", "race condition", "memory leak",
		"time complexity", "data structure", "linked list", "binary search", "hash table", "()", "=>", "::", "->", "!=", "==",
		"&&", "||", "[]", "{}", "代码", "函数", "コード"}
	mathWords = set("integral", "integrals", "integrate", "derivative", "derivatives", "differentiate", "eigenvalue",
		"eigenvalues", "eigenvector", "matrix", "matrices", "equation", "equations", "probability", "variance", "expectation",
		"converge", "converges", "convergence", "polynomial", "logarithm", "modulo", "factorial", "combinatorics", "calculus",
		"theorem", "lemma", "irrational", "primes", "infinitely", "induction", "bayes", "bayesian", "regression", "vector",
		"vectors", "determinant", "topology", "manifold", "group", "subgroup", "isomorphic", "homomorphism", "limit", "series",
		"sequence", "geometric", "arithmetic", "hypothesis", "p-value", "distribution", "gaussian", "permutations",
		"combinations", "dice", "optimization", "asymptotic", "recurrence", "fourier", "laplace", "differential",
		"stochastic", "markov", "gradient", "sigma", "sqrt", "log", "sin", "cos", "tan", "x²", "n²", "solve", "eigenvectors",
		"extrema", "inflection", "arrange", "expected", "integer", "entanglement", "quantum")
	formalWords   = set("prove", "proves", "proof", "proofs", "theorem", "theorems", "lemma", "докажи", "докажите", "demuestra", "démontrez")
	formalPhrases = []string{"show that", "\\frac", "\\int", "\\sum", "\\lim", "\\sqrt", "\\mathbb",
		"$$", "\\(", "\\[", "∫", "∑", "∀", "∃", "démontrer", "beweisen", "beweise", "证明", "demuestra", "demostrar"}
	mathSymbols = []string{"^", "√", "π", "≤", "≥", "≠", "∞", "f(x)", "dx", "mod "}
	domainWords = map[string][]string{
		"legal": {"contract", "contracts", "lawsuit", "sue", "liability", "liable", "gdpr", "statute", "court", "attorney",
			"lawyer", "legal", "legally", "copyright", "patent", "trademark", "landlord", "clause", "clauses", "jurisdiction",
			"compliance", "litigation", "tort", "negligence", "indemnity", "indemnification", "nda", "arbitration",
			"plaintiff", "defendant", "lease", "eviction", "custody", "visa", "immigration", "regulation", "regulatory", "ccpa"},
		"medical": {"symptom", "symptoms", "diagnosis", "diagnose", "dosage", "dose", "mg", "medication", "medications",
			"drug", "drugs", "disease", "treatment", "patient", "patients", "clinical", "pregnancy", "pregnant", "cancer",
			"insulin", "diabetes", "blood", "chemotherapy", "antibiotic", "antibiotics", "vaccine", "surgery", "mri",
			"tumor", "tumour", "prognosis", "contraindications", "syndrome", "chronic", "hipaa", "ibuprofen", "warfarin",
			"statin", "statins", "medical", "physician", "dementia", "arrhythmia"},
		"finance": {"tax", "taxes", "portfolio", "investment", "investments", "invest", "investing", "mortgage", "irr", "npv",
			"dividend", "dividends", "stock", "stocks", "bond", "bonds", "loan", "loans", "retirement", "401k", "401(k)", "ira",
			"roth", "valuation", "hedge", "accounting", "ebitda", "dcf", "revenue", "equity", "amortization",
			"depreciation", "audit", "fiscal", "financial", "finance",
			"crypto", "vesting", "wacc", "liquidity", "annuity", "arr", "margins", "rsus", "brokerage"},
		"security": {"vulnerability", "vulnerabilities", "exploit", "exploits", "cve", "xss", "csrf", "injection", "encryption",
			"encrypt", "malware", "phishing", "authentication", "oauth", "tls", "ssl", "pentest", "penetration", "firewall",
			"ransomware", "zero-day", "cryptographic", "attacker", "attackers", "threat", "security", "secure", "jwt",
			"hashing", "bcrypt", "ddos", "mitm", "privilege", "escalation", "sandbox", "owasp", "secrets", "csp", "cors"},
	}
	reasoningWords = set("design", "designing", "architect", "architecture", "trade-off", "trade-offs", "tradeoff",
		"tradeoffs", "analyze", "analyse", "analysis", "compare", "comparison", "contrast", "evaluate", "optimize",
		"optimise", "strategy", "strategies", "critique", "implications", "justify", "derive", "comprehensive", "thorough",
		"thoroughly", "essay", "scalable", "migrate", "migration", "refactor", "investigate", "assess",
		"implement", "implementing", "debug", "debugging", "diagnose", "rigorous", "rigorously", "formalize", "benchmark",
		"plan", "roadmap", "proposal", "counterarguments", "nuanced", "consequences", "weigh", "reconcile", "pitfalls", "threat",
		"analysez", "proposez", "comparez", "évaluez", "bewerte", "vergleiche", "ausführlich", "оцени", "сравни", "stress",
		"differential", "assessment", "validity", "prioritised", "prioritized", "mitigate", "mitigations", "identify",
		"fault-tolerant", "distributed", "consensus", "concurrency", "concurrent", "bottleneck", "algorithmically",
		"analysieren", "analyser", "analizar")
	reasoningPhrases = []string{"step by step", "step-by-step", "pros and cons", "in depth", "in-depth", "root cause",
		"why does", "why is", "edge cases", "what would happen", "under what conditions", "how would you", "walk me through",
		"in detail", "detailed", "long-term", "分析", "设计", "比较", "异同", "論じ", "how should i design",
		"what would you", "which assumptions", "justify each", "each step", "show the reasoning", "the implications", "compare them"}
	greetingStarts = []string{"hi", "hello", "hey", "thanks", "thank you", "good morning", "good evening", "good night",
		"good afternoon", "how are you", "bonjour", "hola", "hallo", "ciao", "merci", "gracias", "danke", "yo", "sup",
		"what's up", "whats up", "nice to meet", "see you", "bye", "goodbye", "cheers", "привет", "你好", "谢谢",
		"こんにちは", "ありがとう", "안녕", "مرحبا", "olá", "obrigado", "salut", "ok thanks", "great, thanks", "lol"}
	explainPhrases = []string{"why ", "explain", "what causes", "causes of", "role of", "best way", "a good way", "rewrite",
		"in simple terms", "briefly", "recipe", "what is the difference", "what's the difference", "how is", "difference between",
		"describe", "what are the", "tips", "how to", "write a", "write an", "summarize", "summarise", "list ",
		"suggest", "help me", "what should", "outline", "overview", "pourquoi", "warum", "por qué", "por que", "explique",
		"erkläre", "explica", "为什么", "怎么", "如何", "解释", "なぜ", "説明", "почему", "объясни", "how would", "ideas for",
		"advice", "what happens", "is it better", "pros", "cons", "teach me", "plan ", "draft", "what were the"}
)

// domainOf maps each domain word to its domain.
var domainOf = func() map[string]string {
	m := map[string]string{}
	for _, d := range []string{"finance", "legal", "medical", "security"} { // a word in two: the first
		for _, w := range domainWords[d] {
			if _, ok := m[w]; !ok {
				m[w] = d
			}
		}
	}
	return m
}()

// taskVerbs are imperatives that each ask for a piece of work.
var taskVerbs = set("explain", "derive", "discuss", "compare", "evaluate", "implement", "write", "design", "analyze",
	"analyse", "prove", "solve", "find", "compute", "calculate", "verify", "justify", "include", "consider", "identify",
	"propose", "review", "assess", "translate", "summarise", "summarize", "contrast", "present", "draft", "build", "create",
	"diagnose", "optimize", "optimise", "refactor", "describe", "sketch", "handle", "show", "list", "suggest", "relate",
	"cite", "citing", "recommend", "advise", "estimate", "predict", "critique", "rewrite")

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// measure computes a question's features (not its history's nor its
// score: Classify adds those).
func measure(query string) Features {
	f := Features{Tokens: approxTokens(query), Parts: 1}
	text := query
	if len(text) > scanLimit {
		text = text[:scanLimit]
	}
	lower := strings.ToLower(text)

	// Scripts: the share of letters outside Latin.
	letters, nonLatin := 0, 0
	for _, r := range text {
		if unicode.IsLetter(r) {
			letters++
			if r >= 0x250 && !unicode.Is(unicode.Latin, r) {
				nonLatin++
			}
		}
	}
	if letters > 0 {
		f.NonLatin = float64(nonLatin) / float64(letters)
	}

	// Code: a fence, or three lines that read as code.
	codeLines := 0
	numbered, bullets := 0, 0
	for line := range strings.Lines(text) {
		t := strings.TrimSpace(line)
		if t == "" {
			continue
		}
		if looksLikeCode(line, t) {
			codeLines++
		}
		if isNumberedItem(t) {
			numbered++
		} else if (strings.HasPrefix(t, "- ") || strings.HasPrefix(t, "* ") || strings.HasPrefix(t, "• ")) && len(t) > 6 {
			bullets++
		}
	}
	f.CodeBlock = strings.Contains(text, "```") || codeLines >= 3
	if strings.Count(text, "`")-3*strings.Count(text, "```") >= 2 {
		f.Code++ // inline code
	}
	for _, p := range codePhrases {
		if strings.Contains(lower, p) {
			f.Code++
		}
	}
	for _, p := range formalPhrases {
		if strings.Contains(lower, p) {
			f.Formal = true
			f.Math++
		}
	}
	for _, p := range mathSymbols {
		if strings.Contains(lower, p) {
			f.Math++
		}
	}
	for _, p := range reasoningPhrases {
		if strings.Contains(lower, p) {
			f.Reasoning++
		}
	}
	for _, p := range explainPhrases {
		if strings.Contains(lower, p) {
			f.Explain = true
			break
		}
	}
	if strings.HasPrefix(lower, "how ") {
		lookup := false
		for _, p := range []string{"how many", "how much", "how far", "how long", "how old", "how tall", "how big",
			"how do you say", "how do you spell", "how do i say", "how are you"} {
			lookup = lookup || strings.HasPrefix(lower, p)
		}
		f.Explain = f.Explain || !lookup
	}
	if strings.Contains(lower, " work?") || strings.Contains(lower, " works?") {
		f.Explain = true
	}
	// Equations: two or more "=" among digits and letters.
	if strings.Count(text, "=") >= 2 && strings.ContainsAny(text, "0123456789") && !f.CodeBlock {
		f.Math++
	}

	// Words.
	domains := map[string]bool{}
	words := 0
	var tasks []string
	forWords(lower, func(w string) {
		words++
		if taskVerbs[w] && !contains(tasks, w) {
			tasks = append(tasks, w)
		}
		switch {
		case codeWords[w]:
			f.Code++
		case mathWords[w]:
			f.Math++
		case formalWords[w]:
			f.Math++
			f.Formal = true
		case reasoningWords[w]:
			f.Reasoning++
		}
		if d, ok := domainOf[w]; ok {
			domains[d] = true
		}
	})
	for _, d := range []string{"finance", "legal", "medical", "security"} {
		if domains[d] {
			f.Domains = append(f.Domains, d)
		}
	}

	// Parts: question marks (a run of them is one), numbered items,
	// bullets, and joining phrases.
	qmarks := 0
	prevQ := false
	for _, r := range text {
		q := r == '?' || r == '？'
		if q && !prevQ {
			qmarks++
		}
		prevQ = q
	}
	parts := max(qmarks, numbered, bullets)
	if f.CodeBlock {
		parts = max(qmarks, numbered)
	}
	for _, p := range []string{"and also", "as well as", "additionally", "in addition", "furthermore", "secondly",
		"then also", "and then", "after that", "also explain", "also,", "finally,", ", then ", ", what ", ", how ", ", why ",
		", and how", ", and what", ", and why", ", and which", ", and where"} {
		parts += strings.Count(lower, p)
	}
	// Several distinct tasks ("explain …, derive …, and discuss …")
	// are several parts even in one sentence.
	parts = max(parts, len(tasks))
	f.Parts = max(parts, 1)

	// Greeting: starts like one and is short.
	if words <= 12 && f.Code == 0 {
		for _, g := range greetingStarts {
			if rest, ok := strings.CutPrefix(lower, g); ok && (rest == "" || !isWordByte(rest[0])) {
				f.Greeting = true
				break
			}
		}
	}
	return f
}

// looksLikeCode reports a line that reads as source code.
func looksLikeCode(line, t string) bool {
	for _, p := range []string{"def ", "func ", "class ", "import ", "#include", "return ", "for (", "if (", "while (",
		"public ", "private ", "const ", "let ", "var ", "fn ", "package ", "select ", "from ", "SELECT ", "INSERT ",
		"UPDATE ", "print(", "console.", "}", "elif ", "else:", "try:", "except ", "catch (", "#!/", "File \"", "at "} {
		if strings.HasPrefix(t, p) {
			if p == "from " || p == "at " || p == "select " {
				// Prose starts so too: code has symbols.
				return strings.ContainsAny(t, "()._*=") && !strings.HasSuffix(t, ".") && !strings.HasSuffix(t, "?")
			}
			return true
		}
	}
	if strings.HasSuffix(t, ";") || strings.HasSuffix(t, "{") || strings.HasSuffix(t, "):") {
		return true
	}
	// Indented lines with assignment or calls.
	if (strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")) && strings.ContainsAny(t, "=()[]") {
		return true
	}
	return false
}

// isNumberedItem reports "1. ...", "2) ...", "(3) ...", "a) ...".
func isNumberedItem(t string) bool {
	t = strings.TrimPrefix(t, "(")
	i := 0
	for i < len(t) && i < 3 && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		if len(t) >= 2 && t[0] >= 'a' && t[0] <= 'e' && t[1] == ')' {
			return len(t) > 4
		}
		return false
	}
	return i < len(t) && (t[i] == '.' || t[i] == ')') && len(t) > i+3 && t[i+1] == ' '
}

// forWords calls fn with each word of s: letters, digits and the
// characters of c++, c#, 401(k), trade-off, o(n).
func forWords(s string, fn func(string)) {
	start := -1
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		w := unicode.IsLetter(r) || unicode.IsDigit(r) || r == '+' || r == '#' || r == '-' || r == '\'' ||
			(r == '(' || r == ')') && start >= 0 && i+n < len(s) && s[i+n] != ' '
		if w && start < 0 {
			start = i
		} else if !w && start >= 0 {
			fn(strings.Trim(s[start:i], "-'"))
			start = -1
		}
		i += n
	}
	if start >= 0 {
		fn(strings.Trim(s[start:], "-'"))
	}
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 0x80
}

func contains(ws []string, w string) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}
