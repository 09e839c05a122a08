//! Windows command lines, built on any platform: the installer prints and
//! stages them, and the client starts the daemon with one on Windows.

/// `arg` quoted for a Windows command line (the rules of
/// `CommandLineToArgvW` and the C runtime): unchanged when it needs no
/// quotes; else in quotes, with the backslashes before a quote, and before
/// the closing quote, doubled.
pub fn quote_windows_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

/// `program` and `args` as one Windows command line.
pub fn windows_command_line<'a>(program: &str, args: impl IntoIterator<Item = &'a str>) -> String {
    std::iter::once(quote_windows_arg(program))
        .chain(args.into_iter().map(quote_windows_arg))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_as_windows_splits_them() {
        assert_eq!(
            quote_windows_arg(r"C:\bin\telemetryd.exe"),
            r"C:\bin\telemetryd.exe"
        );
        assert_eq!(
            quote_windows_arg(r"C:\Program Files\t\telemetryd.exe"),
            r#""C:\Program Files\t\telemetryd.exe""#
        );
        assert_eq!(quote_windows_arg(""), r#""""#);
        assert_eq!(quote_windows_arg(r"a b\"), r#""a b\\""#);
        assert_eq!(quote_windows_arg(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quote_windows_arg(r#"a\"b"#), r#""a\\\"b""#);
        assert_eq!(
            windows_command_line(r"C:\a b\t.exe", ["--socket", r"\\.\pipe\x"]),
            r#""C:\a b\t.exe" --socket \\.\pipe\x"#
        );
    }
}
