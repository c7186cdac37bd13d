// Issue 11: where RL falls short of p*'s strict reward (Experiments/Sweep.cs Shortfall), by hand on four prompts, and
// the per-prompt counts behind it: several rewards scored on one set of samples equal each reward's own call.
using Workbook.Experiments;
using Workbook.Training;
using Workbook.Verifiers;

namespace Workbook.Tests;

public class ShortfallTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    /// <summary>p*(r = 1 | x) for a 0/1 reward: P·e^{1/β} / (P·e^{1/β} + 1 − P).</summary>
    static double PStar(double p, double beta) => p * Math.Exp(1 / beta) / (p * Math.Exp(1 / beta) + 1 - p);

    [Fact]
    public void The_shortfall_splits_by_the_reference_success_rate_and_adds_up()
    {
        // π_ref's successes of 16: P = 0, 1/16, 1/4, 3/4; RL's of 4 (strict, lenient)
        int[] refCounts = [0, 1, 4, 12];
        var reached = new ReachedCounts(4, [0, 1, 4, 4], [2, 3, 4, 4]);
        const double beta = 0.5;
        var g = Sweep.Shortfall(refCounts, 16, reached, beta, g: 8);
        Assert.Equal(["P < 1/8", "1/8 ≤ P < 1/2", "P ≥ 1/2"], g.Select(x => x.Group));
        Assert.Equal([0.5, 0.25, 0.25], g.Select(x => x.PromptShare));
        // rare: prompts 0 and 1
        Assert.Equal((0 + PStar(1 / 16.0, beta)) / 2, g[0].RewardAtOptimum, 12);
        Assert.Equal((0 + 0.25) / 2, g[0].Reached, 12);
        Assert.Equal((0.5 + 0.75) / 2, g[0].LenientReached, 12);
        Assert.Equal((0 - 0 + PStar(1 / 16.0, beta) - 0.25) / 4, g[0].Shortfall, 12);
        Assert.Equal((PStar(0.25, beta) - 1) / 4, g[1].Shortfall, 12);
        Assert.Equal((PStar(0.75, beta) - 1) / 4, g[2].Shortfall, 12);
        double total = Enumerable.Range(0, 4).Sum(i => PStar(refCounts[i] / 16.0, beta) - reached.Strict[i] / 4.0) / 4;
        Assert.Equal(total, g.Sum(x => x.Shortfall), 12);
        Assert.Throws<ArgumentException>(() => Sweep.Shortfall([1, 2], 16, reached, beta, 8));
    }

    sealed class EvenLength : IVerifier
    {
        public string Name => "even";

        public VerifierResult Score(string prompt, string completion, string reference) =>
            new(completion.Length % 2 == 0 ? 1 : 0, null, true);
    }

    sealed class HasA : IVerifier
    {
        public string Name => "has-a";

        public VerifierResult Score(string prompt, string completion, string reference) =>
            new(completion.Contains('a') ? 1 : 0, null, true);
    }

    [Fact]
    public void Counts_of_several_rewards_come_from_one_set_of_samples()
    {
        var ev = new Evaluator(
            fx.Codec,
            fx.Task.Eval.Take(6).ToList(),
            fx.Task.EvalVerifiers,
            new EvalOptions { MaxNewTokens = 6 }
        );
        using var model = fx.NewModel(4);
        var both = ev.SuccessCounts(model, [new EvenLength(), new HasA()], 5, seed: 11);
        Assert.Equal(both[0], ev.SuccessCounts(model, new EvenLength(), 5, 11));
        Assert.Equal(both[1], ev.SuccessCounts(model, new HasA(), 5, 11));
        Assert.Contains(both[0], c => c is > 0 and < 5); // the samples differ, so the test can fail
        // kept samples (a control's prediction from the same stage, ExperimentRunner) score as a fresh draw: the same
        // model, k and seed draw the same texts, here scored by another evaluator over the same prompts
        var kept = ev.SamplesPerPrompt(model, 5, 11);
        Assert.Equal(6, kept.Length);
        Assert.All(kept, t => Assert.Equal(5, t.Length));
        var other = new Evaluator(
            fx.Codec,
            fx.Task.Eval.Take(6).ToList(),
            [new HasA()],
            new EvalOptions { MaxNewTokens = 6 }
        );
        Assert.Equal(both[1], other.SuccessCounts(kept, [new HasA()])[0]);
        Assert.Equal(both, ev.SuccessCounts(ev.SamplesPerPrompt(model, 5, 11), [new EvenLength(), new HasA()]));
        Assert.Throws<ArgumentException>(() => ev.SuccessCounts(kept.Take(5).ToList(), [new HasA()]));
    }
}
