using Workbook.Theory;

namespace Workbook.Tests;

/// <summary>The stop rule replayed on a trajectory against a predicted T*, both scored by Φ against hindsight
/// (Theory/StopVsTStar.cs). Closed-form trajectories, no training.</summary>
public class StopVsTStarTests
{
    // J(t) = 1 − e^{−t/10} saturates, L(t) = 0.01·t rises: with λ = 1, Φ'(t) = 0.1·e^{−t/10} − 0.01 = 0 at
    // t* = 10·ln 10 ≈ 23.03, so the hindsight T* on integer steps is 23
    static readonly double[] J = Enumerable.Range(0, 61).Select(t => 1 - Math.Exp(-t / 10.0)).ToArray();
    static readonly double[] L = Enumerable.Range(0, 61).Select(t => 0.01 * t).ToArray();

    static double Phi(int t) => J[t] - J[0] - (L[t] - L[0]);

    [Fact]
    public void On_a_saturating_reward_the_rule_stops_near_the_optimum_and_beats_an_early_prediction()
    {
        var c = StopVsTStar.Of(J, L, 1.0, 5.2, 4);
        Assert.Equal(23, c.MeasuredTStar);
        Assert.Equal(Phi(23), c.PhiBest, 12);
        Assert.True(c.StopRuleFired);
        Assert.Equal(0, c.StopRuleStep % 4); // it can stop only at a check
        Assert.InRange(c.StopRuleStep, 20, 28);
        Assert.Equal(Phi((int)c.StopRuleStep) / Phi(23), c.StopRuleRatio!.Value, 12);
        Assert.True(c.StopRuleRatio > 0.98);
        Assert.Equal(5, c.PredictedStep); // rounded
        Assert.Equal(Phi(5) / Phi(23), c.PredictedRatio!.Value, 12);
        Assert.EndsWith("The stop rule predicts better on this trajectory.", c.Describe(1.0));
    }

    [Fact]
    public void A_prediction_at_the_optimum_beats_a_rule_that_can_stop_only_at_its_checks()
    {
        // the reward pays until step 23, then falls: a prediction at 23 is exact, the rule stops at a multiple of 4
        var steady = Enumerable.Range(0, 61).Select(t => 0.02 * t - (t > 23 ? 0.05 * (t - 23) : 0)).ToArray();
        var flat = new double[61];
        var c = StopVsTStar.Of(steady, flat, 1.0, 23, 4);
        Assert.Equal(23, c.MeasuredTStar);
        Assert.Equal(1.0, c.PredictedRatio!.Value, 12);
        Assert.True(c.StopRuleRatio < 1);
        Assert.EndsWith("The predicted T* predicts better on this trajectory.", c.Describe(1.0));
    }

    [Fact]
    public void When_phi_never_rises_neither_ratio_is_defined()
    {
        var falling = Enumerable.Range(0, 21).Select(t => -0.01 * t).ToArray();
        var c = StopVsTStar.Of(falling, new double[21], 1.0, double.NaN, 4);
        Assert.Equal(0, c.MeasuredTStar);
        Assert.Null(c.StopRuleRatio);
        Assert.Null(c.PredictedRatio);
        Assert.Equal(-1, c.PredictedStep);
        Assert.Contains("neither can be ranked", c.Describe(1.0));
    }
}
