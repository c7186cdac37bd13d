// Which predicts the best RL stopping step better on one trajectory: the landscape's T* (from the constants ℓ_S, ℓ_R,
// μ_R, before RL runs) or the stop rule (Training/StopRule.cs: local fits to the evaluations seen so far, no
// hindsight)? Issue 14 §3 asks for the comparison.
//  1. Both are scored the same way: Φ(T) = ΔJ(T) − λ·ΔL_S(T) at their step, as a fraction of Φ at the measured T*
//     (the hindsight argmax over the trajectory); a ratio is undefined when that maximum is ≤ 0.
//  2. The stop rule is the marginal one with the landscape's λ ("dJ < λ*dL_SFT"), checked every k steps on the exact
//     J and L_S of the trajectory; if it never fires it stops at the last step run.
//  3. The predicted T* is rounded to a step and clamped to the trajectory.
using Workbook.Training;

namespace Workbook.Theory;

public sealed record StopVsTStar(
    int CheckSteps,
    int MeasuredTStar,
    double PhiBest,
    long StopRuleStep,
    bool StopRuleFired,
    double PhiStopRule,
    double? StopRuleRatio,
    int PredictedStep,
    double PhiPredicted,
    double? PredictedRatio
)
{
    /// <summary><paramref name="objective"/> and <paramref name="sftLoss"/> per RL step (index = step, 0 = start);
    /// <paramref name="predictedTStar"/> the landscape's prediction (NaN: none).</summary>
    public static StopVsTStar Of(
        IReadOnlyList<double> objective,
        IReadOnlyList<double> sftLoss,
        double lambda,
        double predictedTStar,
        int k
    )
    {
        if (objective.Count != sftLoss.Count || objective.Count < 2)
            throw new ArgumentException("StopVsTStar: the trajectory needs at least two steps of J and L_S");
        if (k < 1)
            throw new ArgumentException("StopVsTStar: k must be >= 1");
        int last = objective.Count - 1;
        double Phi(int t) => objective[t] - objective[0] - lambda * (sftLoss[t] - sftLoss[0]);
        int best = Enumerable.Range(0, objective.Count).Aggregate((a, b) => Phi(b) > Phi(a) ? b : a);
        var rule = new StopRule(StopKind.Marginal, lambda, $"dJ < {lambda}*dL_SFT");
        var evals = Enumerable
            .Range(0, objective.Count)
            .Where(t => t % k == 0)
            .Select(t => new StopEval(t, objective[t], sftLoss[t]))
            .ToList();
        var firing = StopEstimator.FiringStep(rule, evals, last, k);
        bool fired = firing is not null;
        long stop = firing ?? last;
        int predicted = double.IsFinite(predictedTStar) ? (int)Math.Clamp(Math.Round(predictedTStar), 0, last) : -1;
        double phiBest = Phi(best),
            phiStop = Phi((int)stop),
            phiPred = predicted >= 0 ? Phi(predicted) : double.NaN;
        double? Ratio(double phi) => phiBest > 0 && double.IsFinite(phi) ? phi / phiBest : null;
        return new StopVsTStar(
            k,
            best,
            phiBest,
            stop,
            fired,
            phiStop,
            Ratio(phiStop),
            predicted,
            phiPred,
            Ratio(phiPred)
        );
    }

    /// <summary>The comparison in words, computed from the numbers.</summary>
    public string Describe(double lambda)
    {
        string R(double? r) => r is { } x ? x.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture) : "—";
        var s =
            $"Stopping against hindsight (λ = {lambda}; Φ at the step as a fraction of Φ at the measured T* = "
            + $"{MeasuredTStar}): the stop rule 'dJ < {lambda}·dL_SFT', checked every {CheckSteps} steps, "
            + (StopRuleFired ? $"stopped at step {StopRuleStep}" : $"never fired and ran to step {StopRuleStep}")
            + $" (ratio {R(StopRuleRatio)}); the landscape's predicted T* "
            + (PredictedStep >= 0 ? $"rounds to step {PredictedStep} (ratio {R(PredictedRatio)})" : "is undefined");
        if (PhiBest <= 0)
            return s + ". Φ never rose above its start, so neither ratio is defined and neither can be ranked.";
        if (StopRuleRatio is { } a && PredictedRatio is { } b)
            return s
                + (
                    Math.Abs(a - b) < 0.01 ? ". Both do as well."
                    : a > b ? ". The stop rule predicts better on this trajectory."
                    : ". The predicted T* predicts better on this trajectory."
                );
        return s + ".";
    }
}
