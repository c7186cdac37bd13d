using Workbook.Theory;

namespace Workbook.Tests;

public class TheoryTests
{
    [Fact]
    public void Theorem_3_1_holds_to_1e_10_on_random_instances()
    {
        for (int seed = 0; seed < 200; seed++)
        {
            var t = TabularProblem.Random(1 + seed % 5, 2 + seed % 7, seed, zeroProbability: seed % 3 == 0 ? 0.3 : 0);
            foreach (var beta in new[] { 0.05, 0.3, 1.0, 7.0 })
            {
                var r = Tabular.Theorem31(t, beta);
                Assert.True(
                    Math.Abs(r.C1MinusIncrease) < 1e-10,
                    $"seed {seed} beta {beta}: C1 {r.C1} vs increase {r.LossIncrease}"
                );
                Assert.True(
                    Math.Abs(r.KlMinusIncrease) < 1e-10,
                    $"seed {seed} beta {beta}: KL {r.KlDataToRl} vs increase {r.LossIncrease}"
                );
                Assert.True(r.C1 >= -1e-12);
            }
        }
    }

    [Fact]
    public void C1_is_zero_iff_the_reward_is_constant_on_the_expert_support()
    {
        var t = TabularProblem.Random(3, 5, 11, zeroProbability: 0.4);
        // constant on the support, arbitrary off it
        var flat = t with
        {
            Reward = t.PData.Select((p, x) => p.Select((v, i) => v > 0 ? 0.3 + x : 100.0 * i).ToArray()).ToArray(),
        };
        Assert.True(Math.Abs(Tabular.C1(flat, 0.2)) < 1e-12);
        Assert.True(Tabular.C1(t, 0.2) > 1e-4);
    }

    [Fact]
    public void C1_grows_as_beta_shrinks_and_matches_both_asymptotes()
    {
        var t = TabularProblem.Random(4, 6, 5);
        double prev = 0;
        foreach (var beta in new[] { 100.0, 10, 1, 0.3, 0.1, 0.03 })
        {
            var c1 = Tabular.C1(t, beta);
            Assert.True(c1 > prev, $"C1 not increasing at beta {beta}");
            prev = c1;
        }
        Assert.Equal(1.0, Tabular.C1(t, 1000) / Tabular.C1LargeBeta(t, 1000), 3);
        Assert.Equal(1.0, Tabular.C1(t, 1e-4) / Tabular.C1SmallBeta(t, 1e-4), 2);
    }

    [Fact]
    public void Reward_identity_holds_to_1e_10_and_sft_after_rl_drops_the_reward()
    {
        for (int seed = 0; seed < 100; seed++)
        {
            var t = TabularProblem.Random(3, 4, seed);
            var piRef = TabularProblem.Random(3, 4, seed + 1000).PData;
            var p = TabularProblem.Random(3, 4, seed + 2000).PData;
            foreach (var beta in new[] { 0.1, 1.0, 5.0 })
                Assert.True(Math.Abs(Tabular.RewardIdentity(t.Q, p, piRef, t.Reward, beta).Difference) < 1e-10);
        }
        // the reward-optimal-ish p* (small β) beats the expert data unless the data are reward-optimal
        var u = TabularProblem.Random(2, 5, 3);
        Assert.True(Tabular.RewardDropAfterSft(u, u.PData, 0.05) > 0);
    }

    [Fact]
    public void A_kl_band_alone_does_not_force_a_reward_drop()
    {
        var (kl, change) = Tabular.Counterexample();
        Assert.Equal(0.13081204, kl, 7);
        Assert.InRange(kl, 0.1, 0.2);
        Assert.Equal(0.0, change);
    }
}
