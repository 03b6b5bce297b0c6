//! Reading the docs' runnable blocks, for the tests that run them as
//! written (tests/readme.rs for the README and docs/, tests/acme.rs for
//! the ACME guide): the fenced blocks of a language, and the output a block
//! promises in the comment lines right after a command.

/// The fenced code blocks of `text` in `language` (```` ```sh ````), in order.
pub fn fenced_blocks(text: &str, language: &str) -> Vec<String> {
    let opening = format!("```{language}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, fence) if fence == opening => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Comment lines that directly follow a command (or another such comment):
/// the output the page promises.
pub fn expected_output(block: &str) -> Vec<String> {
    let mut expected = Vec::new();
    let mut after_command = false;
    for line in block.lines() {
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            if after_command {
                expected.push(comment.trim().to_owned());
            }
        } else {
            after_command = !trimmed.is_empty();
        }
    }
    expected
}

/// Whether `output` has a line holding the fragments of `expected` (split
/// at `…`), in order.
pub fn shows(output: &str, expected: &str) -> bool {
    output.lines().any(|line| {
        let mut rest = line;
        expected.split('…').all(|fragment| {
            let fragment = fragment.trim();
            match rest.find(fragment) {
                Some(at) => {
                    rest = &rest[at + fragment.len()..];
                    true
                }
                None => false,
            }
        })
    })
}
