namespace Workbook.Verifiers;

/// <summary>
/// GSM8K: strict extraction is the last "#### N" (verl's strict mode); flexible is the last number in the output. The
/// reference may be a bare final answer ("18") or a full GSM8K solution ending in "#### 18".
/// </summary>
public sealed class Gsm8kVerifier(bool flexible) : IVerifier
{
    public string Name => flexible ? "gsm8k-flexible" : "gsm8k";

    public static string? ReferenceAnswer(string reference) =>
        reference.Contains("####") ? MathAnswer.ExtractHash(reference) : reference.Trim();

    public VerifierResult Score(string prompt, string completion, string reference)
    {
        var gold = ReferenceAnswer(reference);
        if (gold is null || MathAnswer.ToNumber(MathAnswer.Normalize(gold)) is null)
            return new VerifierResult(null, null, false, $"unparseable reference '{reference}'");
        var strict = MathAnswer.ExtractHash(completion);
        var pred = flexible ? MathAnswer.ExtractLastNumber(completion) : strict;
        if (pred is null)
            return new VerifierResult(0, null, strict is not null);
        return new VerifierResult(MathAnswer.Equivalent(pred, gold) ? 1 : 0, pred, strict is not null);
    }
}

/// <summary>Free-form math: priority extraction (#### > \boxed{} > "answer is" > last number), normalised, numeric
/// compare.</summary>
public sealed class MathVerifier : IVerifier
{
    public string Name => "math";

    public VerifierResult Score(string prompt, string completion, string reference)
    {
        var gold =
            reference.Contains("####") || reference.Contains("\\boxed")
                ? MathAnswer.Extract(reference)
                : reference.Trim();
        if (string.IsNullOrWhiteSpace(gold))
            return new VerifierResult(null, null, false, $"unparseable reference '{reference}'");
        var pred = MathAnswer.Extract(completion);
        bool formatOk =
            MathAnswer.ExtractBoxed(completion) is not null || MathAnswer.ExtractHash(completion) is not null;
        if (pred is null)
            return new VerifierResult(0, null, formatOk);
        return new VerifierResult(MathAnswer.Equivalent(pred, gold) ? 1 : 0, pred, formatOk);
    }
}
