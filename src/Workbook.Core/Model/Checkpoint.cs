// Hugging Face model folders: config.json + model.safetensors (or model.safetensors.index.json with shards).
// Loading is strict and reports every missing, unexpected or mis-shaped tensor in one error; tensors are cast to the
// requested compute dtype. Pickle checkpoints (.bin/.pt) are refused: loading them would execute code from data.
using System.Text.Json;
using static TorchSharp.torch;

namespace Workbook.Model;

public static class Checkpoint
{
    public const string ConfigFile = "config.json",
        WeightsFile = "model.safetensors",
        IndexFile = "model.safetensors.index.json";

    public static Qwen3ForCausalLM Load(string dir, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (File.Exists(dir) && (dir.EndsWith(".bin") || dir.EndsWith(".pt") || dir.EndsWith(".pth")))
            throw new WorkbookException(
                $"{dir}: pickle checkpoints are refused (loading them can run arbitrary code); convert to safetensors"
            );
        if (!Directory.Exists(dir))
            throw new WorkbookException($"{dir}: model folder not found");
        var config = Qwen3Config.Load(Path.Combine(dir, ConfigFile));
        var shards = WeightFiles(dir);
        CheckShapes(config, shards);
        var model = new Qwen3ForCausalLM(config, dtype, device, initialize: false); // every weight is read below
        LoadWeights(model, shards);
        return model;
    }

    /// <summary>The state-dict names and shapes a config describes (Hugging Face names), computed without allocating.
    /// A test checks it against a built model's state_dict.</summary>
    public static Dictionary<string, long[]> ExpectedShapes(Qwen3Config c)
    {
        long h = c.HiddenSize,
            i = c.IntermediateSize;
        long q = (long)c.NumAttentionHeads * c.HeadDim,
            kv = (long)c.NumKeyValueHeads * c.HeadDim;
        var d = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [c.VocabSize, h],
            ["model.norm.weight"] = [h],
        };
        if (!c.TieWordEmbeddings)
            d["lm_head.weight"] = [c.VocabSize, h];
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = $"model.layers.{l}.";
            foreach (var (name, o) in new[] { ("q_proj", q), ("k_proj", kv), ("v_proj", kv) })
            {
                d[$"{p}self_attn.{name}.weight"] = [o, h];
                if (c.AttentionBias)
                    d[$"{p}self_attn.{name}.bias"] = [o];
            }
            d[$"{p}self_attn.o_proj.weight"] = [h, q];
            if (c.AttentionBias)
                d[$"{p}self_attn.o_proj.bias"] = [h];
            d[$"{p}self_attn.q_norm.weight"] = [c.HeadDim];
            d[$"{p}self_attn.k_norm.weight"] = [c.HeadDim];
            d[$"{p}mlp.gate_proj.weight"] = [i, h];
            d[$"{p}mlp.up_proj.weight"] = [i, h];
            d[$"{p}mlp.down_proj.weight"] = [h, i];
            d[$"{p}input_layernorm.weight"] = [h];
            d[$"{p}post_attention_layernorm.weight"] = [h];
        }
        return d;
    }

    /// <summary>Compares the config's tensors with the weight files' headers, so a config that does not match its
    /// weights is refused before the model is allocated (a 1,000,000-layer config on a 2-layer checkpoint).</summary>
    static void CheckShapes(Qwen3Config config, List<string> shards)
    {
        var files = shards.Select(SafetensorsFile.Open).ToList();
        try
        {
            Compare(ExpectedShapes(config), config.TieWordEmbeddings, files);
        }
        finally
        {
            foreach (var f in files)
                f.Dispose();
        }
    }

    /// <summary>Every missing, unexpected or mis-shaped tensor, in one error.</summary>
    static Dictionary<string, SafetensorsFile> Compare(
        IReadOnlyDictionary<string, long[]> expected,
        bool tied,
        List<SafetensorsFile> files
    )
    {
        var where = new Dictionary<string, SafetensorsFile>();
        foreach (var f in files)
        foreach (var name in f.Entries.Keys)
            where[name] = f;
        var problems = new List<string>();
        foreach (var (name, shape) in expected)
        {
            if (!where.TryGetValue(name, out var f))
            {
                problems.Add($"missing tensor '{name}' [{string.Join(",", shape)}]");
                continue;
            }
            var e = f.Entries[name];
            if (!e.Shape.SequenceEqual(shape))
                problems.Add(
                    $"tensor '{name}' has shape [{string.Join(",", e.Shape)}] in {Path.GetFileName(f.Path)}, "
                        + $"the model expects [{string.Join(",", shape)}]"
                );
        }
        foreach (var name in where.Keys)
            if (!expected.ContainsKey(name) && !(tied && name == "lm_head.weight")) // tied checkpoints may carry a copy
                problems.Add($"unexpected tensor '{name}' in {Path.GetFileName(where[name].Path)}");
        if (problems.Count > 0)
        {
            const int show = 20; // a config far off its weights would list thousands
            var list = problems
                .Take(show)
                .Append(problems.Count > show ? $"... and {problems.Count - show} more" : null)
                .OfType<string>();
            throw new WorkbookException(
                $"checkpoint {string.Join(", ", files.Select(f => f.Path))} does not match "
                    + "the config:\n  - "
                    + string.Join("\n  - ", list)
            );
        }
        return where;
    }

    /// <summary>The safetensors files of a folder: the single file, or the shards named by the index.</summary>
    public static List<string> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFile);
        var index = Path.Combine(dir, IndexFile);
        if (File.Exists(single))
            return [single];
        if (File.Exists(index))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
                var files = doc
                    .RootElement.GetProperty("weight_map")
                    .EnumerateObject()
                    .Select(p => p.Value.GetString()!)
                    .Distinct()
                    .ToList();
                var missing = files.Where(f => !File.Exists(Path.Combine(dir, f))).ToList();
                if (missing.Count > 0)
                    throw new WorkbookException($"{index}: shard file(s) missing: {string.Join(", ", missing)}");
                return files.Select(f => Path.Combine(dir, f)).ToList();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new WorkbookException(
                    $"{index}: malformed index ({e.Message}); expected {{\"weight_map\": {{tensor: file}}}}"
                );
            }
        }
        var pickles = Directory
            .GetFiles(dir)
            .Where(f => f.EndsWith(".bin") || f.EndsWith(".pt") || f.EndsWith(".pth"))
            .Select(Path.GetFileName)
            .ToList();
        if (pickles.Count > 0)
            throw new WorkbookException(
                $"{dir}: only pickle weights found ({string.Join(", ", pickles)}); they are refused (loading them can "
                    + "run arbitrary code). Convert them to model.safetensors"
            );
        throw new WorkbookException($"{dir}: no {WeightsFile} or {IndexFile}");
    }

    public static void LoadWeights(Qwen3ForCausalLM model, IEnumerable<string> files)
    {
        var expected = model.state_dict();
        var files_ = files.Select(SafetensorsFile.Open).ToList();
        try
        {
            var shapes = expected.ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            var where = Compare(shapes, model.Config.TieWordEmbeddings, files_);
            using var _ = no_grad();
            foreach (var (name, p) in expected)
            {
                if (where[name].TryReadInto(name, p))
                    continue;
                using var t = where[name].Read(name);
                using var cast = t.to(p.dtype);
                p.copy_(cast);
            }
        }
        finally
        {
            foreach (var f in files_)
                f.Dispose();
        }
    }

    /// <summary>Writes config.json and model.safetensors (tensors in the model's dtype). Both writes are
    /// atomic.</summary>
    public static void Save(Qwen3ForCausalLM model, string dir, ScalarType? storeAs = null)
    {
        Directory.CreateDirectory(dir);
        var dtypeName = (storeAs ?? model.DType) == ScalarType.BFloat16 ? "bfloat16" : "float32";
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), (model.Config with { TorchDtype = dtypeName }).ToJson());
        var sd = model.state_dict();
        var tensors = sd.Select(kv => new KeyValuePair<string, Tensor>(
                kv.Key,
                storeAs is { } s ? kv.Value.to(s) : kv.Value
            ))
            .ToList();
        SafetensorsFile.Save(Path.Combine(dir, WeightsFile), tensors);
    }
}
