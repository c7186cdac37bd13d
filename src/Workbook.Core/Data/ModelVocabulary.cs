// Which vocabulary a model folder speaks. A full Qwen3 model uses Qwen3 ids as they are; a small model trained here
// uses a compact task vocabulary, and its folder (a checkpoint) carries the vocab.json that maps its rows to Qwen3 ids.
//  1. vocab.json ({"qwen_ids": [...]}; a tokenizer's vocab.json is not one) next to the weights wins; else the nearest
//     run folder above the checkpoint that holds one (<run>/checkpoints/step-N, <run>/<pipeline>/seed-N/<stage>/...);
//  2. no vocab.json: the identity, if the model has the full Qwen3 vocabulary (151,936 rows); otherwise an error;
//  3. a vocab.json whose size differs from the model's embedding rows is an error (it belongs to another model).
namespace Workbook.Data;

public static class ModelVocabulary
{
    public const string FileName = "vocab.json";

    /// <summary>Qwen3's embedding rows (the tokenizer's ids are all below this).</summary>
    public const int QwenVocabSize = 151936;

    /// <summary>The vocab.json that belongs to a model folder, or null.</summary>
    public static string? Find(string modelDir, int levelsUp = 6)
    {
        var d = new DirectoryInfo(Path.GetFullPath(modelDir));
        for (int i = 0; d is not null && i <= levelsUp; i++, d = d.Parent)
        {
            var p = Path.Combine(d.FullName, FileName);
            if (File.Exists(p) && IsTaskVocabulary(p))
                return p;
        }
        return null;
    }

    /// <summary>Ours ({"qwen_ids": [...]}), not a Hugging Face tokenizer's vocab.json (token -> id), which Qwen3
    /// folders also ship under that name.</summary>
    static bool IsTaskVocabulary(string path)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object
                && doc.RootElement.TryGetProperty("qwen_ids", out var ids)
                && ids.ValueKind == System.Text.Json.JsonValueKind.Array;
        }
        catch (System.Text.Json.JsonException)
        {
            return false;
        }
    }

    public static TaskVocabulary For(string modelDir, int modelVocabSize)
    {
        var path = Find(modelDir);
        if (path is null)
        {
            if (modelVocabSize >= QwenVocabSize)
                return TaskVocabulary.Identity(modelVocabSize);
            throw new WorkbookException(
                $"{modelDir}: the model has {modelVocabSize} embedding rows (a compact task vocabulary), "
                    + $"but no {FileName} was found next to its weights or in the run folder above it; copy "
                    + $"the {FileName} of the run "
                    + "that trained it into the model folder"
            );
        }
        var v = TaskVocabulary.Load(path);
        if (v.Size != modelVocabSize)
            throw new WorkbookException(
                $"{path}: {v.Size} entries, but the model in {modelDir} has {modelVocabSize} embedding rows; "
                    + $"this {FileName} belongs to another model"
            );
        return v;
    }
}
