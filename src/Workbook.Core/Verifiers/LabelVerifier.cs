// CoLA-style acceptability labels, as the paper uses them: RL is trained with a STRICT format reward (the final line
// must be exactly "Answer: acceptable" or "Answer: unacceptable" and match the reference) and evaluated with a LENIENT
// parse (the last label word anywhere in the output). The two differ on purpose; both are reported.
using System.Text.RegularExpressions;

namespace Workbook.Verifiers;

public sealed partial class LabelVerifier(bool strict) : IVerifier
{
    public string Name => strict ? "cola-strict" : "cola-lenient";

    [GeneratedRegex(@"\b(unacceptable|acceptable)\b", RegexOptions.IgnoreCase)]
    private static partial Regex LabelWord();

    [GeneratedRegex(@"^Answer: (acceptable|unacceptable)$")]
    private static partial Regex StrictLine();

    /// <summary>Reference forms: "acceptable"/"unacceptable", "1"/"0" (CoLA: 1 = acceptable).</summary>
    public static string? ReferenceLabel(string reference) =>
        reference.Trim().ToLowerInvariant() switch
        {
            "1" or "acceptable" => "acceptable",
            "0" or "unacceptable" => "unacceptable",
            _ => null,
        };

    public static string? StrictAnswer(string completion)
    {
        var lines = completion.TrimEnd('\n', ' ').Split('\n');
        var m = StrictLine().Match(lines[^1]);
        return m.Success ? m.Groups[1].Value : null;
    }

    public static string? LenientAnswer(string completion)
    {
        var ms = LabelWord().Matches(completion);
        return ms.Count == 0 ? null : ms[^1].Groups[1].Value.ToLowerInvariant();
    }

    public VerifierResult Score(string prompt, string completion, string reference)
    {
        var gold = ReferenceLabel(reference);
        if (gold is null)
            return new VerifierResult(null, null, false, $"unparseable label reference '{reference}'");
        var strictAns = StrictAnswer(completion);
        var pred = strict ? strictAns : LenientAnswer(completion);
        return new VerifierResult(pred == gold ? 1 : 0, pred, strictAns is not null);
    }
}

/// <summary>Format reward for thinking mode: exactly one closed &lt;think&gt;...&lt;/think&gt; block at the start, then
/// an answer.</summary>
public sealed class ThinkFormatVerifier : IVerifier
{
    public string Name => "think-format";

    public VerifierResult Score(string prompt, string completion, string reference)
    {
        var c = completion.TrimStart();
        bool ok =
            c.StartsWith("<think>")
            && c.IndexOf("</think>", StringComparison.Ordinal) is var e and > 0
            && c.IndexOf("<think>", 1, StringComparison.Ordinal) < 0
            && c[(e + "</think>".Length)..].Trim().Length > 0;
        return new VerifierResult(ok ? 1 : 0, null, ok);
    }
}
