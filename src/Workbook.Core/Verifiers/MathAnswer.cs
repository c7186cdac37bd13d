// Answer extraction and normalisation for math, following the union of verl's gsm8k/math scorers, lm-eval's gsm8k and
// Math-Verify's priorities (see notes/anchors.md §4): look at the tail of the text; "#### N" > last \boxed{...} (brace
// balanced) > "the answer is ..." > last number; strip $, \$, thousands commas, a trailing '.', \text{...}, ^\circ, %,
// \left/\right; \dfrac/\tfrac -> \frac; compare as numbers (rationals and decimals, relative tolerance 1e-6) before
// falling back to string equality.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Workbook.Verifiers;

public static partial class MathAnswer
{
    public const int TailChars = 300;

    [GeneratedRegex(@"####\s*(\-?[0-9\.\,]+)")]
    private static partial Regex StrictHash();

    [GeneratedRegex(@"(\-?[0-9\.\,]*[0-9]+)")]
    private static partial Regex AnyNumber();

    [GeneratedRegex(@"(?:final answer|answer)\s*(?:is|:)\s*([^\n]+)", RegexOptions.IgnoreCase)]
    private static partial Regex AnswerIs();

    [GeneratedRegex(@"\\text\{([^{}]*)\}")]
    private static partial Regex TextMacro();

    public static string Tail(string s) => s.Length > TailChars ? s[^TailChars..] : s;

    /// <summary>GSM8K strict: the last "#### N".</summary>
    public static string? ExtractHash(string text)
    {
        var ms = StrictHash().Matches(Tail(text));
        return ms.Count == 0 ? null : ms[^1].Groups[1].Value;
    }

    /// <summary>GSM8K flexible: the last number that is not just "." or ",".</summary>
    public static string? ExtractLastNumber(string text)
    {
        var ms = AnyNumber().Matches(Tail(text));
        for (int i = ms.Count - 1; i >= 0; i--)
        {
            var v = ms[i].Groups[1].Value.Trim('.', ',');
            if (v.Length > 0 && v != "-")
                return v;
        }
        return null;
    }

    /// <summary>The content of the last \boxed{...} (or \fbox{...}), braces balanced; null if absent or
    /// unclosed.</summary>
    public static string? ExtractBoxed(string text)
    {
        int idx = Math.Max(
            text.LastIndexOf("\\boxed", StringComparison.Ordinal),
            text.LastIndexOf("\\fbox", StringComparison.Ordinal)
        );
        if (idx < 0)
            return null;
        int open = text.IndexOf('{', idx);
        if (open < 0)
        {
            // "\boxed 5" form
            var rest = text[(idx + "\\boxed".Length)..].TrimStart();
            var m = Regex.Match(rest, @"^[^\s$]+");
            return m.Success ? m.Value : null;
        }
        int depth = 0;
        for (int i = open; i < text.Length; i++)
        {
            if (text[i] == '{')
                depth++;
            else if (text[i] == '}' && --depth == 0)
                return text[(open + 1)..i];
        }
        return null; // unclosed: truncated output
    }

    /// <summary>Priority extraction for free-form math answers.</summary>
    public static string? Extract(string text)
    {
        if (ExtractHash(text) is { } h)
            return h;
        if (ExtractBoxed(text) is { } b)
            return b;
        var ms = AnswerIs().Matches(Tail(text));
        if (ms.Count > 0)
            return ms[^1].Groups[1].Value.Trim().TrimEnd('.');
        return ExtractLastNumber(text);
    }

    public static string Normalize(string s)
    {
        s = s.Trim();
        s = TextMacro().Replace(s, "$1");
        s = s.Replace("\\left", "")
            .Replace("\\right", "")
            .Replace("\\!", "")
            .Replace("\\,", "")
            .Replace("\\;", "")
            .Replace("^{\\circ}", "")
            .Replace("^\\circ", "")
            .Replace("\\%", "")
            .Replace("%", "")
            .Replace("\\$", "")
            .Replace("$", "")
            .Replace("\\dfrac", "\\frac")
            .Replace("\\tfrac", "\\frac");
        s = s.Replace(" ", "").Replace("\n", "");
        // thousands separators: 1,000 / 12,345,678 (but not tuples like 1,2)
        s = Regex.Replace(s, @"(?<=\d),(?=\d{3}(?!\d))", "");
        s = s.TrimEnd('.');
        if (s.StartsWith('.'))
            s = "0" + s;
        s = Regex.Replace(s, @"\\frac(\d)(\d)", @"\frac{$1}{$2}");
        s = Regex.Replace(s, @"\\sqrt(\d+)", @"\sqrt{$1}");
        // a short "x=" prefix
        var eq = Regex.Match(s, @"^[a-zA-Z]\w{0,2}=(.+)$");
        if (eq.Success)
            s = eq.Groups[1].Value;
        return s;
    }

    /// <summary>Parses a normalised answer as a number: integers, decimals, a/b, \frac{a}{b}, -\frac{a}{b}.</summary>
    public static double? ToNumber(string s)
    {
        if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d))
            return d;
        var m = Regex.Match(s, @"^(-?)\\frac\{(-?[0-9.]+)\}\{(-?[0-9.]+)\}$");
        if (!m.Success)
            m = Regex.Match(s, @"^(-?)\(?(-?[0-9.]+)\)?/\(?(-?[0-9.]+)\)?$");
        if (
            m.Success
            && double.TryParse(m.Groups[2].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var a)
            && double.TryParse(m.Groups[3].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var b)
            && b != 0
        )
            return (m.Groups[1].Value == "-" ? -1 : 1) * a / b;
        return null;
    }

    static bool IsInteger(double v) => Math.Abs(v) < 1e15 && v == Math.Floor(v);

    public static bool Equivalent(string predicted, string reference)
    {
        var p = Normalize(predicted);
        var r = Normalize(reference);
        if (ToNumber(p) is { } x && ToNumber(r) is { } y)
        {
            // integers compare exactly (a relative tolerance would accept 192000001 for 192,000,000)
            if (IsInteger(x) && IsInteger(y))
                return x == y;
            return Math.Abs(x - y) <= 1e-6 * Math.Max(1, Math.Abs(y));
        }
        return p == r;
    }
}
