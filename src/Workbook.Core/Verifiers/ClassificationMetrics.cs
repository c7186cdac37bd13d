// Accuracy and Matthews correlation (MCC) of label predictions, CoLA's usual metrics, for both parses of a completion:
//  1. strict: the final line must be exactly "Answer: <label>" (the RL reward's parse); lenient: the last label word
//     anywhere (the paper's evaluation parse);
//  2. a completion with no parsable label is its own predicted class "none", which is never correct; MCC is then the
//     K-class generalisation (Gorodkin's R_K) over {acceptable, unacceptable, none}, which equals the usual binary MCC
//     when every completion parses: MCC = (c·s − Σ_k p_k·t_k) / sqrt((s² − Σ_k p_k²)·(s² − Σ_k t_k²)), with s rows,
//     c correct, p_k predicted and t_k true counts of class k;
//  3. a zero denominator (one class predicted or present) gives MCC 0, as scikit-learn does.
namespace Workbook.Verifiers;

public sealed record ClassificationScore(int N, double Accuracy, double Mcc, int Unparsed);

public static class ClassificationMetrics
{
    /// <summary>Accuracy and MCC of (gold, predicted) pairs; a null prediction is the class "none".</summary>
    public static ClassificationScore Score(IReadOnlyList<(string Gold, string? Predicted)> pairs)
    {
        if (pairs.Count == 0)
            return new ClassificationScore(0, double.NaN, double.NaN, 0);
        const string none = "\u0000none";
        var pred = pairs.Select(p => p.Predicted ?? none).ToList();
        var classes = pairs.Select(p => p.Gold).Concat(pred).Distinct().ToList();
        double s = pairs.Count;
        double c = pairs.Where((p, i) => p.Gold == pred[i]).Count();
        double pt = 0,
            pp = 0,
            tt = 0;
        foreach (var k in classes)
        {
            double pk = pred.Count(x => x == k),
                tk = pairs.Count(p => p.Gold == k);
            pt += pk * tk;
            pp += pk * pk;
            tt += tk * tk;
        }
        double den = Math.Sqrt((s * s - pp) * (s * s - tt));
        double mcc = den == 0 ? 0 : (c * s - pt) / den;
        return new ClassificationScore(pairs.Count, c / s, mcc, pred.Count(x => x == none));
    }

    /// <summary>The evaluator's hook: eval_accuracy/{strict,lenient} and eval_mcc/{strict,lenient} of completions
    /// against label references ("acceptable"/"unacceptable" or 1/0); rows with an unparseable reference are
    /// skipped.</summary>
    public static Dictionary<string, double> LabelMetrics(IEnumerable<(string Completion, string Reference)> rows)
    {
        var strict = new List<(string, string?)>();
        var lenient = new List<(string, string?)>();
        foreach (var (completion, reference) in rows)
        {
            if (LabelVerifier.ReferenceLabel(reference) is not { } gold)
                continue;
            strict.Add((gold, LabelVerifier.StrictAnswer(completion)));
            lenient.Add((gold, LabelVerifier.LenientAnswer(completion)));
        }
        var a = Score(strict);
        var b = Score(lenient);
        return new()
        {
            ["eval_accuracy/strict"] = a.Accuracy,
            ["eval_mcc/strict"] = a.Mcc,
            ["eval_accuracy/lenient"] = b.Accuracy,
            ["eval_mcc/lenient"] = b.Mcc,
        };
    }
}
