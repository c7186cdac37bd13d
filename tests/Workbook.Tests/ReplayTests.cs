using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>Issue 13: work a run would repeat is done once, with the same numbers. A memoized evaluation (EvalMemo.cs)
/// returns what computing it returns, and a stage that replays another's trajectory (StageReplay.cs) logs, evaluates,
/// stops and keeps exactly what training it gives; a replay that would not be exact trains instead.</summary>
public class ReplayTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    Evaluator Eval(bool memo) =>
        new(fx.Codec, fx.Task.Eval.Take(8).ToList(), fx.Task.EvalVerifiers, new EvalOptions { MaxNewTokens = 8 })
        {
            Memoize = memo,
        };

    static void Nudge(Qwen3ForCausalLM m)
    {
        using var _ = no_grad();
        using TorchSharp.Scalar step = 1e-3; // held: see Qwen3RMSNorm
        var w = m.model.norm.weight;
        w[0] = w[0].Plus(step);
    }

    [Fact]
    public void The_fingerprint_follows_the_weights_and_survives_a_checkpoint()
    {
        using var a = fx.NewModel(5);
        var dir = TestData.TempDir();
        Checkpoint.Save(a, dir);
        using var b = Checkpoint.Load(dir, ScalarType.Float32, CPU);
        Assert.Equal(ModelFingerprint.Of(a), ModelFingerprint.Of(b));
        using var c = fx.NewModel(6);
        Assert.NotEqual(ModelFingerprint.Of(a), ModelFingerprint.Of(c));
        Nudge(b);
        Assert.NotEqual(ModelFingerprint.Of(a), ModelFingerprint.Of(b));
    }

    [Fact]
    public void A_memoized_evaluation_returns_what_computing_it_returns()
    {
        using var model = fx.NewModel(5);
        var plain = Eval(false);
        var memo = Eval(true);
        var startDir = TestData.TempDir();
        using var start = StageStart.Prepare(startDir, model, 0, null, memo)!;
        Assert.NotNull(start.Fingerprint);
        Assert.Equal(0, memo.MemoHits); // Prepare's draw is the first
        var expected = plain.Run(model);
        Assert.Equal(expected, memo.Run(model));
        int before = memo.MemoHits;
        var again = memo.Run(model);
        Assert.Equal(before + 1, memo.MemoHits);
        Assert.Equal(expected, again);
        again["eval_sft_loss"] = -1; // callers own their copy
        Assert.Equal(expected, memo.Run(model));
        // with the start snapshot (KL from start, the start's own samples at step 0)
        using var plainStart = StageStart.Prepare(TestData.TempDir(), model, 0, null, plain)!;
        Assert.Equal(plain.Run(model, start: plainStart, atStart: true), memo.Run(model, start: start, atStart: true));
        Assert.Equal(plain.Sample(model).Select(c => c.Tokens), memo.Sample(model).Select(c => c.Tokens));
        Assert.Equal(plain.Run(model, start: plainStart), memo.Run(model, start: start)); // not at the start
        // other weights, other numbers: the memo does not answer for them
        Nudge(model);
        Assert.Equal(plain.Run(model), memo.Run(model));
        Assert.Equal(plain.Run(model, start: plainStart), memo.Run(model, start: start));
    }

    static GrpoOptions Donor() => TrainerRuns.TinyGrpo() with { EvalSteps = 4 };

    static GrpoOptions Follower() =>
        Donor() with
        {
            StopWhen = "dJ < 1000*dL_SFT", // fires at a check: the rule's stop, kept model and hindsight all run
            StopCheckSteps = 2,
            StopPatience = 1,
            StopRestoreBest = true,
            StopHindsight = true,
        };

    GrpoTrainer Trainer(GrpoOptions o, string dir, long modelSeed = 5) =>
        new(fx.NewModel(modelSeed), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir, Eval(true));

    (StageRecording Record, string Dir) Recorded(GrpoOptions follower)
    {
        var dir = TestData.TempDir();
        var rec = new StageRecording("donor", StageRecording.ModelReads(follower));
        var t = Trainer(Donor(), dir);
        t.RecordInto = rec;
        t.Train();
        return (rec, dir);
    }

    [Fact]
    public void A_replayed_stage_logs_evaluates_stops_and_keeps_what_training_it_gives()
    {
        var trained = TestData.TempDir();
        var t = Trainer(Follower(), trained);
        t.Train();
        Assert.False(t.Replayed);
        var (rec, _) = Recorded(Follower());
        using var _r = rec;
        var replayed = TestData.TempDir();
        var r = Trainer(Follower(), replayed);
        r.ReplayFrom = rec;
        r.Train();
        Assert.True(r.Replayed);
        Assert.Equal(TrainerRuns.Comparable(trained), TrainerRuns.Comparable(replayed));
        Assert.All(
            MetricsLog.Read(Path.Combine(replayed, "metrics.jsonl")),
            o => Assert.Equal("donor", (string?)o["replayed_from"])
        );
        Assert.NotNull(t.StoppedAt);
        Assert.Equal((t.StoppedAt, t.BestStep), (r.StoppedAt, r.BestStep));
        Assert.Equal(t.KeepBestAtEnd(), r.KeepBestAtEnd());
        // the last checkpoint: weights, trainer state (tokens seen included) and health, byte for byte
        foreach (var f in new[] { Checkpoint.WeightsFile, "trainer_state.json", "health.json" })
            Assert.Equal(
                File.ReadAllBytes(Path.Combine(TrainerCheckpoint.Latest(trained)!, f)),
                File.ReadAllBytes(Path.Combine(TrainerCheckpoint.Latest(replayed)!, f))
            );
        var kept = Path.Combine(GrpoTrainer.StoppedModelDir, Checkpoint.WeightsFile);
        Assert.Equal(File.Exists(Path.Combine(trained, kept)), File.Exists(Path.Combine(replayed, kept)));
        if (File.Exists(Path.Combine(trained, kept)))
            Assert.Equal(
                File.ReadAllBytes(Path.Combine(trained, kept)),
                File.ReadAllBytes(Path.Combine(replayed, kept))
            );
    }

    [Fact]
    public void A_stage_hashes_its_start_weights_once()
    {
        // four readers of the start weights: the start snapshot (KL from start), the recording, the replay check
        // (another start model, so it trains) and the step-0 evaluation; then one hash per later evaluation
        var (rec, _) = Recorded(Donor());
        using var _r = rec;
        var dir = TestData.TempDir();
        var t = Trainer(Donor(), dir, modelSeed: 6);
        t.ReplayFrom = rec;
        using var record = new StageRecording("this", StageRecording.ModelReads(Donor()));
        t.RecordInto = record;
        // the replay check gets as far as the fingerprints: only the start model differs
        Assert.Equal(StageRecording.Trajectory(Donor()), rec.TrajectoryOptions);
        Assert.True(rec.Covers(Donor().MaxSteps, StageRecording.ModelReads(Donor())));
        long before = ModelFingerprint.ComputedOnThisThread;
        t.Train();
        long hashes = ModelFingerprint.ComputedOnThisThread - before;
        Assert.False(t.Replayed);
        var evaluations = MetricsLog
            .Read(Path.Combine(dir, "metrics.jsonl"))
            .Count(o => o["eval_sft_loss"] is not null);
        Assert.Equal(3, evaluations); // steps 0, 4 and 8
        Assert.Equal(evaluations, hashes);
        using var seed6 = fx.NewModel(6); // the one hash at the start is the start model's
        Assert.Equal(ModelFingerprint.Of(seed6), record.StartFingerprint);
    }

    [Fact]
    public void A_replay_that_would_not_be_exact_trains_instead()
    {
        var (rec, _) = Recorded(Follower());
        using var _r = rec;
        // another learning rate (another trajectory), another start model, a step the record kept no weights for,
        // a checkpoint before the last step, a resumed stage: each trains, and logs what training gives
        (GrpoOptions O, long Seed)[] cases =
        [
            (Follower() with { LearningRate = 1e-3 }, 5),
            (Follower(), 6),
            (Follower() with { StopCheckSteps = 3 }, 5),
            (Follower() with { SaveSteps = 4 }, 5),
        ];
        foreach (var (o, seed) in cases)
        {
            var dir = TestData.TempDir();
            var r = Trainer(o, dir, seed);
            r.ReplayFrom = rec;
            r.Train();
            Assert.False(r.Replayed);
            var fresh = TestData.TempDir();
            Trainer(o, fresh, seed).Train();
            Assert.Equal(TrainerRuns.Comparable(fresh), TrainerRuns.Comparable(dir));
        }
        // a replaying stage that resumes (killed midway while training) trains on from its checkpoint
        var killed = TestData.TempDir();
        var k = Trainer(Follower() with { SaveSteps = 2 }, killed);
        k.CrashAfter(3);
        Assert.Throws<OperationCanceledException>(() => k.Train());
        var again = Trainer(Follower() with { SaveSteps = 2 }, killed);
        again.ReplayFrom = rec;
        again.Train(resume: true);
        Assert.False(again.Replayed);
        // a record whose own stage resumed midway is not replayed either
        var partial = new StageRecording("donor", StageRecording.ModelReads(Follower()));
        var d = TestData.TempDir();
        var crash = Trainer(Donor() with { SaveSteps = 2 }, d);
        crash.CrashAfter(3);
        Assert.Throws<OperationCanceledException>(() => crash.Train());
        var resumed = Trainer(Donor() with { SaveSteps = 2 }, d); // from the checkpoint of step 2
        resumed.RecordInto = partial;
        resumed.Train(resume: true);
        Assert.False(partial.Usable);
        var f = Trainer(Follower(), TestData.TempDir());
        f.ReplayFrom = partial;
        f.Train();
        Assert.False(f.Replayed);
    }
}
