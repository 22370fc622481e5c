//! Lexer for the schema language: turns schema text into tokens with byte spans.
//!
//! Follows SpiceDB's lexer where it matters for what parses: words are runs of letters, digits and
//! `_`; a newline after a word, `)`, `}`, `*` or `...` (SpiceDB forgets this one) becomes a [`TokenKind::Newline`] token (SpiceDB's
//! "synthetic semicolon") that ends a statement, and other newlines are skipped. Comments are
//! skipped, but doc comments (`/** ... */`, `/// ...`) are attached to the next token. Caveat
//! bodies are CEL, so strings and CEL operators are lexed too; characters the schema language
//! does not use become [`TokenKind::Unknown`] tokens for the parser to refuse outside caveats.

use crate::error::{ErrorKind, Pending};

/// A byte range `start..end` in the schema text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A word: a name, a keyword or (in CEL) a number.
    Ident,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Pipe,
    Plus,
    Minus,
    Amp,
    Slash,
    Equals,
    Colon,
    Semicolon,
    /// A newline that ends a statement (after a word, `)`, `}`, `*` or `...`).
    Newline,
    /// `->`
    Arrow,
    Hash,
    /// `...`
    Ellipsis,
    Star,
    Period,
    Comma,
    Lt,
    Gt,
    /// A quoted string (only meaningful in CEL).
    Str,
    /// Another CEL operator: `||`, `&&`, `!`, `!=`, `==`, `<=`, `>=`, `?`, `%`.
    Op,
    /// A character the schema language does not use.
    Unknown,
    Eof,
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// Doc comments (`/** */`, `///`) seen since the previous token, normalized.
    pub doc: Option<String>,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.span.start..self.span.end).unwrap_or("")
    }

    /// How to name this token in an error message ("`=`", "end of line", ...).
    pub fn describe(&self, src: &str) -> String {
        match self.kind {
            TokenKind::Eof => "end of input".to_string(),
            TokenKind::Newline => "end of line".to_string(),
            TokenKind::Str => "a string literal".to_string(),
            _ => {
                let text = self.text(src);
                if text.chars().count() > 40 {
                    let short: String = text.chars().take(40).collect();
                    format!("`{short}...`")
                } else {
                    format!("`{text}`")
                }
            }
        }
    }
}

/// Splits `src` into tokens, ending with one [`TokenKind::Eof`]. Fails only on an unterminated
/// block comment or string.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, Pending> {
    Lexer {
        src,
        pos: 0,
        tokens: Vec::new(),
        docs: Vec::new(),
        last: None,
    }
    .run()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
    /// Doc comment texts waiting for the next non-newline token.
    docs: Vec<String>,
    /// Kind of the last token emitted (newlines included).
    last: Option<TokenKind>,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn emit(&mut self, kind: TokenKind, start: usize) {
        let doc = if kind == TokenKind::Newline || kind == TokenKind::Eof {
            None
        } else {
            take_doc(&mut self.docs)
        };
        self.tokens.push(Token {
            kind,
            span: Span::new(start, self.pos),
            doc,
        });
        self.last = Some(kind);
    }

    fn run(mut self) -> Result<Vec<Token>, Pending> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            let rest = self.rest();
            // Two- and three-character tokens and comments first.
            let multi = [
                ("...", TokenKind::Ellipsis),
                ("->", TokenKind::Arrow),
                ("||", TokenKind::Op),
                ("&&", TokenKind::Op),
                ("==", TokenKind::Op),
                ("!=", TokenKind::Op),
                ("<=", TokenKind::Op),
                (">=", TokenKind::Op),
            ];
            if let Some((text, kind)) = multi.iter().find(|(t, _)| rest.starts_with(t)) {
                self.pos += text.len();
                self.emit(*kind, start);
                continue;
            }
            if rest.starts_with("//") {
                self.line_comment();
                continue;
            }
            if rest.starts_with("/*") {
                self.block_comment()?;
                continue;
            }
            if c == '\n' || c == '\r' {
                self.pos += 1;
                if matches!(
                    self.last,
                    Some(
                        TokenKind::Ident
                            | TokenKind::RParen
                            | TokenKind::RBrace
                            | TokenKind::Star
                            | TokenKind::Ellipsis
                    )
                ) {
                    self.emit(TokenKind::Newline, start);
                }
                continue;
            }
            if c.is_whitespace() || c == '\u{feff}' {
                self.pos += c.len_utf8();
                continue;
            }
            if c == '_' || c.is_alphanumeric() {
                while let Some(c) = self.peek() {
                    if c == '_' || c.is_alphanumeric() {
                        self.pos += c.len_utf8();
                    } else {
                        break;
                    }
                }
                self.emit(TokenKind::Ident, start);
                continue;
            }
            if c == '"' || c == '\'' {
                self.string(c)?;
                self.emit(TokenKind::Str, start);
                continue;
            }
            let kind = match c {
                '{' => TokenKind::LBrace,
                '}' => TokenKind::RBrace,
                '(' => TokenKind::LParen,
                ')' => TokenKind::RParen,
                '[' => TokenKind::LBracket,
                ']' => TokenKind::RBracket,
                '|' => TokenKind::Pipe,
                '+' => TokenKind::Plus,
                '-' => TokenKind::Minus,
                '&' => TokenKind::Amp,
                '/' => TokenKind::Slash,
                '=' => TokenKind::Equals,
                ':' => TokenKind::Colon,
                ';' => TokenKind::Semicolon,
                '#' => TokenKind::Hash,
                '*' => TokenKind::Star,
                '.' => TokenKind::Period,
                ',' => TokenKind::Comma,
                '<' => TokenKind::Lt,
                '>' => TokenKind::Gt,
                '!' | '?' | '%' => TokenKind::Op,
                _ => TokenKind::Unknown,
            };
            self.pos += c.len_utf8();
            self.emit(kind, start);
        }
        let end = self.src.len();
        self.pos = end;
        self.emit(TokenKind::Eof, end);
        Ok(self.tokens)
    }

    fn line_comment(&mut self) {
        let rest = self.rest();
        let len = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let text = &rest[..len];
        self.pos += len;
        if let Some(body) = text.strip_prefix("///") {
            if !body.starts_with('/') {
                self.docs.push(body.trim().to_string());
            }
        }
    }

    fn block_comment(&mut self) -> Result<(), Pending> {
        let start = self.pos;
        let rest = self.rest();
        let Some(close) = rest.get(2..).and_then(|r| r.find("*/")) else {
            return Err(Pending::new(
                start,
                ErrorKind::Syntax,
                "unterminated block comment: expected `*/`, found end of input",
            ));
        };
        let inner = &rest[2..2 + close];
        self.pos += 2 + close + 2;
        // `/** doc */` but not `/**/` or `/*** rule ***/`.
        if let Some(doc) = inner.strip_prefix('*') {
            if !doc.is_empty() && !doc.starts_with('*') {
                let lines: Vec<&str> = doc
                    .lines()
                    .map(|l| {
                        let l = l.trim();
                        l.strip_prefix('*').map_or(l, str::trim)
                    })
                    .collect();
                let first = lines
                    .iter()
                    .position(|l| !l.is_empty())
                    .unwrap_or(lines.len());
                let last = lines
                    .iter()
                    .rposition(|l| !l.is_empty())
                    .map_or(first, |i| i + 1);
                self.docs
                    .push(lines.get(first..last).unwrap_or(&[]).join("\n"));
            }
        }
        Ok(())
    }

    /// Consumes a string starting at the current position with quote `q`: `"..."`, `'...'`,
    /// `"""..."""` or `'''...'''`; backslash escapes the next character.
    fn string(&mut self, q: char) -> Result<(), Pending> {
        let start = self.pos;
        let triple: String = [q, q, q].iter().collect();
        let is_triple = self.rest().starts_with(&triple);
        self.pos += if is_triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek() else {
                let close = if is_triple {
                    triple.clone()
                } else {
                    q.to_string()
                };
                return Err(Pending::new(
                    start,
                    ErrorKind::Syntax,
                    format!("unterminated string literal: expected closing `{close}`, found end of input"),
                ));
            };
            if c == '\\' {
                self.pos += 1;
                if let Some(next) = self.peek() {
                    self.pos += next.len_utf8();
                }
                continue;
            }
            if is_triple {
                if self.rest().starts_with(&triple) {
                    self.pos += 3;
                    return Ok(());
                }
            } else if c == q {
                self.pos += 1;
                return Ok(());
            } else if c == '\n' || c == '\r' {
                return Err(Pending::new(
                    start,
                    ErrorKind::Syntax,
                    format!(
                        "unterminated string literal: expected closing `{q}`, found end of line"
                    ),
                ));
            }
            self.pos += c.len_utf8();
        }
    }
}

/// Joins the pending doc comments into one doc, dropping blank leading and trailing lines.
fn take_doc(docs: &mut Vec<String>) -> Option<String> {
    if docs.is_empty() {
        return None;
    }
    let joined = docs.join("\n");
    docs.clear();
    let lines: Vec<&str> = joined.lines().collect();
    let first = lines.iter().position(|l| !l.is_empty())?;
    let last = lines.iter().rposition(|l| !l.is_empty())?;
    Some(lines[first..=last].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenKind::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        lex(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn punctuation_and_words() {
        assert_eq!(
            kinds("a->b + c.any(d) - e & f | g#h:* ..."),
            vec![
                Ident, Arrow, Ident, Plus, Ident, Period, Ident, LParen, Ident, RParen, Minus,
                Ident, Amp, Ident, Pipe, Ident, Hash, Ident, Colon, Star, Ellipsis, Eof
            ]
        );
    }

    #[test]
    fn synthetic_newlines() {
        assert_eq!(kinds("a\nb"), vec![Ident, Newline, Ident, Eof]);
        assert_eq!(kinds("a +\nb"), vec![Ident, Plus, Ident, Eof]);
        assert_eq!(kinds("{\n\n}\n\n"), vec![LBrace, RBrace, Newline, Eof]);
        assert_eq!(kinds("a // c\nb"), vec![Ident, Newline, Ident, Eof]);
        assert_eq!(kinds("a\r\nb"), vec![Ident, Newline, Ident, Eof]);
    }

    #[test]
    fn doc_comments_attach_to_next_token() {
        let toks = lex("/** Hello\n * world\n */\n// plain\n/// more\ndefinition").unwrap();
        assert_eq!(toks[0].doc.as_deref(), Some("Hello\nworld\nmore"));
        let toks = lex("/* not doc */ /**/ //// not doc\nx").unwrap();
        assert_eq!(toks[0].doc, None);
    }

    #[test]
    fn strings_and_cel_operators() {
        assert_eq!(
            kinds(r#"a == "}" && b['x'] != '''{''' || !c"#),
            vec![Ident, Op, Str, Op, Ident, LBracket, Str, RBracket, Op, Str, Op, Op, Ident, Eof]
        );
        assert_eq!(kinds(r#""a\"b""#), vec![Str, Eof]);
    }

    #[test]
    fn errors_have_positions() {
        let err = lex("a /* never closed").unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("expected `*/`"));
        let err = lex("x \"abc\ny\"").unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("found end of line"));
    }

    #[test]
    fn unknown_characters_become_tokens() {
        assert_eq!(kinds("a @ b"), vec![Ident, Unknown, Ident, Eof]);
    }
}
