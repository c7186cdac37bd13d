// The one wording of what a paired comparison's intervals say (the frontier statement against sft-then-rl and the
// summary's comparisons of interleaved and joint against the stage orders), so the two reports cannot drift apart.
// A coordinate counts as separated only when its 95% CI over the per-seed differences excludes zero.
namespace Workbook.Experiments;

public static class PairedVerdict
{
    /// <summary>What the intervals of paired differences a − b of the final SFT loss (<paramref name="loss"/>, lower is
    /// better) and the final reward (<paramref name="reward"/>, higher is better) say: which coordinate is separated
    /// from zero, in which direction, and, when both are, whether a is better on both, worse on both or trades.
    /// </summary>
    public static string Of(Stat loss, Stat reward)
    {
        if (!double.IsFinite(loss.Ci95[0]) && !double.IsFinite(reward.Ci95[0]))
            return "no interval (under 2 seeds), so nothing is separated";
        string l =
            loss.BelowZero ? "lower SFT loss"
            : loss.AboveZero ? "higher SFT loss"
            : "";
        string r =
            reward.AboveZero ? "higher reward"
            : reward.BelowZero ? "lower reward"
            : "";
        return (l, r) switch
        {
            ("", "") => "the CIs separate neither coordinate",
            (_, "") => $"the CIs separate only the SFT loss ({l})",
            ("", _) => $"the CIs separate only the reward ({r})",
            _ when loss.BelowZero == reward.AboveZero =>
                $"the CIs separate both ({l}, {r}): {(loss.BelowZero ? "better" : "worse")} on both",
            _ => $"the CIs separate both ({l}, {r}): a trade-off",
        };
    }
}
