using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>The shared builders (issue 10): tokenizer → vocabulary → codec → model, sampling options and
/// padding.</summary>
public class SetupTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    /// <summary>A compact-vocabulary model folder for arithmetic: weights, config, vocab.json, tokenizer.</summary>
    static string ArithmeticModel(TrainingFixture fx)
    {
        var dir = TestData.TempDir();
        var golden = Path.Combine(TestData.Golden, "tiny-qwen3-bf16");
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(golden, f), Path.Combine(dir, f));
        var arithmetic = TaskRegistry.Create("arithmetic", 1, new TaskOptions { TrainSize = 50, EvalSize = 8 });
        var vocab = TaskVocabulary.Build(fx.Tok, arithmetic);
        using (var m = new Qwen3ForCausalLM(Qwen3Config.Tiny(vocab.Size), ScalarType.Float32, CPU, 1))
            Checkpoint.Save(m, dir);
        vocab.Save(Path.Combine(dir, ModelVocabulary.FileName));
        return dir;
    }

    [Fact]
    public void Run_refuses_a_compact_model_folder_that_lacks_the_tasks_tokens_and_names_them()
    {
        var dir = ArithmeticModel(fx);
        var cfg = ExperimentTests.Tiny with { Model = dir, Dataset = "grammar" };
        var root = TestData.TempDir();
        var e = Assert.Throws<WorkbookException>(() => new ExperimentRunner(cfg, Path.Combine(root, "r"), root));
        Assert.Contains("compact vocabulary lacks token(s)", e.Message);
        Assert.Contains("'grammar'", e.Message);
    }

    [Fact]
    public void A_model_folder_brings_its_own_tokenizer_and_vocabulary_to_the_codec()
    {
        var dir = ArithmeticModel(fx);
        var arithmetic = TaskRegistry.Create("arithmetic", 1, new TaskOptions { TrainSize = 50, EvalSize = 8 });
        var codec = ModelSetup.Codec(dir, arithmetic);
        Assert.Equal(TaskVocabulary.Load(Path.Combine(dir, ModelVocabulary.FileName)).QwenIds, codec.Vocab.QwenIds);
        using var model = ModelSetup.Model(
            dir,
            _ => throw new InvalidOperationException(),
            0,
            ScalarType.Float32,
            CPU,
            0
        );
        Assert.Equal(codec.Vocab.Size, model.Config.VocabSize);
    }

    [Fact]
    public void Evaluation_samples_draw_with_the_evaluations_top_k()
    {
        using var model = fx.NewModel(5);
        var examples = fx.Task.Eval.Take(4).ToList();
        var ev = new Evaluator(
            fx.Codec,
            examples,
            fx.Task.EvalVerifiers,
            new EvalOptions { MaxNewTokens = 6, TopK = 1 }
        );
        // top_k = 1 leaves one token per step: the samples are the greedy completions, whatever the seed
        var greedy = Generation.Generate(
            model,
            examples.Select(fx.Codec.Prompt).ToList(),
            new GenerationOptions
            {
                Greedy = true,
                MaxNewTokens = 6,
                EosTokenIds = [fx.Codec.EosId],
                PadTokenId = fx.Codec.PadId,
            }
        );
        var samples = ev.Samples(model, 4, seed: 123);
        for (int i = 0; i < 4; i++)
            Assert.Equal(fx.Codec.Decode(greedy[i].Tokens), samples[i].Completion);
    }

    [Fact]
    public void Prompts_are_left_padded_and_completions_right_padded()
    {
        var (ids, mask) = PromptPadding.PromptCompletion(
            [
                [7, 8],
                [9],
            ],
            2,
            [
                [1],
                [2, 3],
            ],
            2,
            padId: 0
        );
        Assert.Equal(new long[] { 7, 8, 1, 0, 0, 9, 2, 3 }, ids);
        Assert.Equal(new long[] { 1, 1, 1, 0, 0, 1, 1, 1 }, mask);
        var (left, leftMask, p) = PromptPadding.LeftPad(
            [
                [7, 8, 9],
                [5],
            ],
            padId: 4
        );
        Assert.Equal(3, p);
        Assert.Equal(new long[] { 7, 8, 9, 4, 4, 5 }, left);
        Assert.Equal(new long[] { 1, 1, 1, 0, 0, 1 }, leftMask);
    }
}
