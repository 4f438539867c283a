//! `$(VAR)` expansion exactly as the kubelet does it for `env[].value`, `command` and
//! `args` (Kubernetes' `third_party/forked/golang/expansion`):
//!
//! - `$(NAME)` is replaced by NAME's value when NAME is defined, and left as it is when not;
//! - `$$` is an escaped `$` (so `$$(NAME)` yields the literal `$(NAME)`);
//! - a `$` followed by anything else, or `$(` without a closing `)`, is kept as it is.

/// Expand `input` with `lookup` (None: the variable is not defined).
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        // incomplete reference: keep "$(" and scan on after it
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // "$x": keep both; `x` may be the first byte of a multi-byte char, so
                    // copy the whole char and skip it
                    let ch = rest.chars().next().expect("non-empty");
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.1.0.5".into()),
            "EMPTY" => Some(String::new()),
            "A" => Some("a$(B)".into()),
            _ => None,
        }
    }

    #[test]
    fn kubernetes_expansion_rules() {
        // the cases of Kubernetes' expand_test.go that apply to a single mapping
        let cases = [
            ("$(POD_IP)", "127.1.0.5"),
            ("--bind=$(POD_IP):9090", "--bind=127.1.0.5:9090"),
            ("$(POD_IP)$(POD_IP)", "127.1.0.5127.1.0.5"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("x$(EMPTY)y", "xy"),
            ("$$(POD_IP)", "$(POD_IP)"),
            ("$$$(POD_IP)", "$127.1.0.5"),
            ("$$$$(POD_IP)", "$$(POD_IP)"),
            ("$$", "$"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$(", "$("),
            ("$(POD_IP", "$(POD_IP"),
            ("$()", "$()"),
            ("$(POD_IP$(POD_IP)", "$(POD_IP$(POD_IP)"),
            ("$(POD_IP)$(", "127.1.0.5$("),
            ("$x", "$x"),
            ("$é", "$é"),
            ("é$(POD_IP)é", "é127.1.0.5é"),
            ("plain", "plain"),
            ("", ""),
            // a value is not expanded again
            ("$(A)", "a$(B)"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "input {input:?}");
        }
    }
}
