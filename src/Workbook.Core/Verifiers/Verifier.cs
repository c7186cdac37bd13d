// Rule-based rewards. A verifier scores (prompt, completion, reference) and returns a reward with the details that logs
// and plots need: what it extracted and whether the required format was met. A null reward means "not scorable" (for
// instance an unparseable reference): such rows are reported and skipped, never silently scored 0.
namespace Workbook.Verifiers;

public sealed record VerifierResult(double? Reward, string? Extracted, bool FormatOk, string? Note = null);

public interface IVerifier
{
    /// <summary>Name used in metrics (<c>rewards/&lt;name&gt;/mean</c>) and on the command line.</summary>
    string Name { get; }
    VerifierResult Score(string prompt, string completion, string reference);
}

/// <summary>A weighted sum of verifiers (TRL's reward_weights); null rewards count as 0 in the sum but are
/// reported.</summary>
public sealed class WeightedReward(IReadOnlyList<(IVerifier Verifier, double Weight)> parts)
{
    public IReadOnlyList<(IVerifier Verifier, double Weight)> Parts { get; } = parts;

    public (double Total, VerifierResult[] Each) Score(string prompt, string completion, string reference)
    {
        var each = Parts.Select(p => p.Verifier.Score(prompt, completion, reference)).ToArray();
        double total = 0;
        for (int i = 0; i < each.Length; i++)
            total += Parts[i].Weight * (each[i].Reward ?? 0);
        return (total, each);
    }
}

public static class VerifierRegistry
{
    public static readonly string[] Names =
    [
        "gsm8k",
        "gsm8k-flexible",
        "math",
        "cola-strict",
        "cola-lenient",
        "think-format",
    ];

    public static IVerifier Create(string name) =>
        name switch
        {
            "gsm8k" => new Gsm8kVerifier(flexible: false),
            "gsm8k-flexible" => new Gsm8kVerifier(flexible: true),
            "math" => new MathVerifier(),
            "cola-strict" => new LabelVerifier(strict: true),
            "cola-lenient" => new LabelVerifier(strict: false),
            "think-format" => new ThinkFormatVerifier(),
            _ => throw new WorkbookException($"unknown verifier '{name}': expected one of {string.Join(", ", Names)}"),
        };
}
