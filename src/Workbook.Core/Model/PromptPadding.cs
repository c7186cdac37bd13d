// The one padding rule of the model's batches: prompts are left-padded (so every row's last prompt token sits at the
// same column and generation appends to all rows at once), completions right-padded; the attention mask is 1 on real
// tokens. Generation pads prompts only (no completions yet); GRPO, the forgetting measures and the tests pad both.
namespace Workbook.Model;

public static class PromptPadding
{
    /// <summary>Rows of left-padded prompts (to P tokens) followed by right-padded completions (to C tokens): ids and
    /// attention mask, both [N·(P + C)] row-major.</summary>
    public static (long[] Ids, long[] Mask) PromptCompletion(
        IReadOnlyList<int[]> prompts,
        int P,
        IReadOnlyList<int[]> completions,
        int C,
        int padId
    )
    {
        int N = prompts.Count,
            L = P + C;
        var ids = new long[N * L];
        var mask = new long[N * L];
        for (int j = 0; j < N; j++)
        {
            var p = prompts[j];
            int off = P - p.Length;
            for (int t = 0; t < P; t++)
            {
                bool real = t >= off;
                ids[j * L + t] = real ? p[t - off] : padId;
                mask[j * L + t] = real ? 1 : 0;
            }
            var c = completions[j];
            for (int t = 0; t < C; t++)
            {
                bool real = t < c.Length;
                ids[j * L + P + t] = real ? c[t] : padId;
                mask[j * L + P + t] = real ? 1 : 0;
            }
        }
        return (ids, mask);
    }

    /// <summary>Left-padded prompts to the longest one: ids and attention mask, [N·P] row-major, and P.</summary>
    public static (long[] Ids, long[] Mask, int P) LeftPad(IReadOnlyList<int[]> prompts, int padId)
    {
        int P = prompts.Count == 0 ? 0 : prompts.Max(p => p.Length);
        var (ids, mask) = PromptCompletion(prompts, P, prompts.Select(_ => Array.Empty<int>()).ToList(), 0, padId);
        return (ids, mask, P);
    }
}
