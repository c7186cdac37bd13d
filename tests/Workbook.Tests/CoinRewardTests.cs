using Workbook.Data;
using Workbook.Training;
using Workbook.Verifiers;

namespace Workbook.Tests;

/// <summary>The coin reward, the null control: fresh seeded coins per step, whatever the completions say.</summary>
public class CoinRewardTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    [Fact]
    public void Coins_are_one_seeded_stream_per_stage_and_step_with_the_stated_probability()
    {
        var c = new CoinReward();
        Assert.Equal(c.Draw(7, 3, 64), c.Draw(7, 3, 64));
        Assert.NotEqual(c.Draw(7, 3, 64), c.Draw(7, 4, 64));
        Assert.NotEqual(c.Draw(7, 3, 64), c.Draw(8, 3, 64));
        var all = Enumerable.Range(0, 400).SelectMany(s => c.Draw(1, s, 64)).ToArray();
        // 25,600 fair coins: 4 standard errors are ±0.0125
        Assert.InRange(all.Average(), 0.4875, 0.5125);
        // no serial dependence inside a step: P(equal neighbours) is 1/2 for independent fair coins
        double same = Enumerable.Range(1, all.Length - 1).Count(i => all[i] == all[i - 1]) / (double)(all.Length - 1);
        Assert.InRange(same, 0.4875, 0.5125);
        Assert.Throws<InvalidOperationException>(() => c.Score("p", "c", "r"));
        Assert.Throws<WorkbookException>(() => new CoinReward(1.0));
    }

    [Fact]
    public void Task_reward_coin_is_the_coin_with_its_expected_reward_and_other_names_are_refused()
    {
        var t = TaskRegistry.Create(
            "grammar",
            1,
            new TaskOptions
            {
                TrainSize = 50,
                EvalSize = 8,
                Reward = "coin",
            }
        );
        Assert.IsType<CoinReward>(t.Reward);
        Assert.Equal(0.5, t.ExpertReward);
        var e = Assert.Throws<WorkbookException>(() => new TaskOptions { Reward = "dice" }.Validate());
        Assert.Contains("task.reward: 'dice'", e.Message);
        Assert.Contains("coin", e.Message);
    }

    [Fact]
    public void A_GRPO_step_under_the_coin_logs_exactly_the_coins_of_its_seed_and_step()
    {
        var dir = TestData.TempDir();
        var o = new GrpoOptions
        {
            LearningRate = 1e-3,
            MaxSteps = 3,
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 6,
            ZeroSignalSteps = 0,
            Seed = 5,
        };
        new GrpoTrainer(fx.NewModel(3), fx.Codec, fx.Task.Train, new CoinReward(), o, dir).Train();
        var rows = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).Where(r => r["reward"] is not null).ToList();
        Assert.Equal(3, rows.Count);
        foreach (var r in rows)
        {
            long step = r["step"]!.GetValue<long>() - 1;
            Assert.Equal(new CoinReward().Draw(5, step, 8).Average(), r["rewards/coin/mean"]!.GetValue<double>(), 12);
        }
    }
}
