// The one place that builds tokenizer → vocabulary → codec → model, for `train`, `run`, the model verbs (score,
// generate), `info`, the benchmarks and the notebooks' paper-scale step (Workbench.PaperScaleStep):
//  1. the tokenizer: an explicit tokenizer.json (or its folder) wins; else the model folder's tokenizer.json; else the
//     embedded default (fetched once, Text/TokenizerFiles.cs);
//  2. the vocabulary: a model folder speaks its own (Data/ModelVocabulary.cs: its vocab.json, or Qwen3's ids when it
//     has Qwen3's embedding rows), and a compact one must hold every token the task uses; a fresh model gets the
//     compact vocabulary of the task(s) it trains on, or Qwen3's ids when it is built with Qwen3's embedding rows;
//  3. the model: the folder's weights, or a fresh model of the caller's shape over that vocabulary.
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using static TorchSharp.torch;

namespace Workbook.Training;

public static class ModelSetup
{
    /// <summary>The tokenizer for a model folder (null: a fresh model); <paramref name="tokenizer"/> overrides.
    /// </summary>
    public static Qwen3Tokenizer Tokenizer(string? modelDir, Action<string>? log = null, string? tokenizer = null)
    {
        if (tokenizer is not null)
            return Qwen3Tokenizer.Load(tokenizer);
        if (modelDir is not null && File.Exists(Path.Combine(modelDir, "tokenizer.json")))
            return Qwen3Tokenizer.Load(modelDir);
        return Qwen3Tokenizer.Load(TokenizerFiles.EnsureDefault(log));
    }

    /// <summary>Embedding rows of a model folder, from its config.json (the weights are not read).</summary>
    public static int FolderVocabSize(string modelDir) =>
        Qwen3Config.Load(Path.Combine(modelDir, "config.json")).VocabSize;

    /// <summary>Which vocabulary a model speaks without a task: a folder's own, Qwen3's ids for a model with Qwen3's
    /// embedding rows, else null (a fresh compact model: its ids mean nothing as text).</summary>
    public static TaskVocabulary? VocabularyOf(string? modelDir, int modelVocabSize) =>
        modelDir is not null ? ModelVocabulary.For(modelDir, modelVocabSize)
        : modelVocabSize >= ModelVocabulary.QwenVocabSize ? TaskVocabulary.Identity(modelVocabSize)
        : null;

    /// <summary>The vocabulary a model trains a task in. A folder's (its compact vocabulary must cover the task's
    /// tokens); for a fresh model, Qwen3's ids when <paramref name="fullVocabulary"/>, else the task's compact one
    /// (with <paramref name="other"/>'s tokens: forgetting_task).</summary>
    public static TaskVocabulary Vocabulary(
        Qwen3Tokenizer tok,
        string? modelDir,
        TaskData task,
        TaskData? other = null,
        bool fullVocabulary = false
    )
    {
        if (modelDir is null)
            return fullVocabulary
                ? TaskVocabulary.Identity(ModelVocabulary.QwenVocabSize)
                : TaskVocabulary.Build(tok, task, other);
        var vocab = ModelVocabulary.For(modelDir, FolderVocabSize(modelDir));
        if (vocab.Size >= ModelVocabulary.QwenVocabSize)
            return vocab;
        var missing = new[] { task, other }
            .OfType<TaskData>()
            .SelectMany(t => t.Train.Concat(t.Eval))
            .SelectMany(e =>
                ChatTemplate.Tokenize(tok, [.. e.Prompt, ChatMessage.Assistant(e.Expert)], false, false).Ids
            )
            .Where(id => !vocab.Contains(id))
            .Distinct()
            .Take(5)
            .Select(i => $"{i} '{tok.Decode([i])}'")
            .ToList();
        if (missing.Count > 0)
            throw new WorkbookException(
                $"{modelDir}: the model's compact vocabulary lacks token(s) {string.Join(", ", missing)} that the "
                    + $"dataset '{task.Name}' uses; a compact-vocabulary model only knows the task it was built for"
            );
        return vocab;
    }

    /// <summary>Tokenizer, vocabulary and codec for training a task.</summary>
    public static Codec Codec(
        string? modelDir,
        TaskData task,
        TaskData? other = null,
        bool fullVocabulary = false,
        bool enableThinking = false,
        Action<string>? log = null
    )
    {
        var tok = Tokenizer(modelDir, log);
        return new Codec(tok, Vocabulary(tok, modelDir, task, other, fullVocabulary))
        {
            EnableThinking = enableThinking,
        };
    }

    /// <summary>The folder's model, or a fresh one: <paramref name="fresh"/> gives its shape for the vocabulary's size
    /// (a fresh model's seed is <paramref name="seed"/>).</summary>
    public static Qwen3ForCausalLM Model(
        string? modelDir,
        Func<int, Qwen3Config> fresh,
        int vocabSize,
        ScalarType dtype,
        Device? device,
        long seed
    ) =>
        modelDir is not null
            ? Checkpoint.Load(modelDir, dtype, device)
            : new Qwen3ForCausalLM(fresh(vocabSize), dtype, device, seed);
}
