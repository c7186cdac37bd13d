// Hugging Face model folders: config.json + model.safetensors (or model.safetensors.index.json with shards).
// Loading is strict and reports every missing, unexpected or mis-shaped tensor in one error; tensors are cast to the
// requested compute dtype. Pickle checkpoints (.bin/.pt) are refused: loading them would execute code from data.
using System.Text.Json;
using static TorchSharp.torch;

namespace Workbook.Model;

public static class Checkpoint
{
    public const string ConfigFile = "config.json", WeightsFile = "model.safetensors", IndexFile = "model.safetensors.index.json";

    public static Qwen3ForCausalLM Load(string dir, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (File.Exists(dir) && (dir.EndsWith(".bin") || dir.EndsWith(".pt") || dir.EndsWith(".pth")))
            throw new WorkbookException($"{dir}: pickle checkpoints are refused (loading them can run arbitrary code); convert to safetensors");
        if (!Directory.Exists(dir)) throw new WorkbookException($"{dir}: model folder not found");
        var config = Qwen3Config.Load(Path.Combine(dir, ConfigFile));
        var shards = WeightFiles(dir);
        CheckSize(config, shards, Path.Combine(dir, ConfigFile));
        var model = new Qwen3ForCausalLM(config, dtype, device);
        LoadWeights(model, shards);
        return model;
    }

    /// <summary>Compares the parameter count of config.json with the elements the weight files hold (headers only), so a
    /// config that does not match its weights is refused before the model is allocated.</summary>
    static void CheckSize(Qwen3Config config, List<string> shards, string configPath)
    {
        long stored = 0;
        foreach (var f in shards)
        {
            using var st = SafetensorsFile.Open(f);
            foreach (var e in st.Entries.Values) stored += e.Shape.Aggregate(1L, (a, b) => a * b);
        }
        long want = config.ParameterCount();
        if (want > stored)
            throw new WorkbookException($"{configPath}: describes {want:N0} parameters but the weights hold {stored:N0} " +
                "(check num_hidden_layers, hidden_size, intermediate_size, vocab_size against the checkpoint)");
    }

    /// <summary>The safetensors files of a folder: the single file, or the shards named by the index.</summary>
    public static List<string> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFile);
        var index = Path.Combine(dir, IndexFile);
        if (File.Exists(single)) return [single];
        if (File.Exists(index))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
                var files = doc.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString()!).Distinct().ToList();
                var missing = files.Where(f => !File.Exists(Path.Combine(dir, f))).ToList();
                if (missing.Count > 0) throw new WorkbookException($"{index}: shard file(s) missing: {string.Join(", ", missing)}");
                return files.Select(f => Path.Combine(dir, f)).ToList();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            { throw new WorkbookException($"{index}: malformed index ({e.Message}); expected {{\"weight_map\": {{tensor: file}}}}"); }
        }
        var pickles = Directory.GetFiles(dir).Where(f => f.EndsWith(".bin") || f.EndsWith(".pt") || f.EndsWith(".pth")).Select(Path.GetFileName).ToList();
        if (pickles.Count > 0)
            throw new WorkbookException($"{dir}: only pickle weights found ({string.Join(", ", pickles)}); they are refused (loading them can run arbitrary code). Convert them to model.safetensors");
        throw new WorkbookException($"{dir}: no {WeightsFile} or {IndexFile}");
    }

    public static void LoadWeights(Qwen3ForCausalLM model, IEnumerable<string> files)
    {
        var expected = model.state_dict();
        var files_ = files.Select(SafetensorsFile.Open).ToList();
        try
        {
            var where = new Dictionary<string, SafetensorsFile>();
            foreach (var f in files_) foreach (var name in f.Entries.Keys) where[name] = f;
            var problems = new List<string>();
            foreach (var (name, p) in expected)
            {
                if (!where.TryGetValue(name, out var f)) { problems.Add($"missing tensor '{name}' [{string.Join(",", p.shape)}]"); continue; }
                var e = f.Entries[name];
                if (!e.Shape.SequenceEqual(p.shape))
                    problems.Add($"tensor '{name}' has shape [{string.Join(",", e.Shape)}] in {Path.GetFileName(f.Path)}, the model expects [{string.Join(",", p.shape)}]");
            }
            bool tied = model.Config.TieWordEmbeddings;
            foreach (var name in where.Keys)
                if (!expected.ContainsKey(name) && !(tied && name == "lm_head.weight"))   // tied checkpoints may carry a copy
                    problems.Add($"unexpected tensor '{name}' in {Path.GetFileName(where[name].Path)}");
            if (problems.Count > 0)
                throw new WorkbookException($"checkpoint {string.Join(", ", files_.Select(f => f.Path))} does not match the config:\n  - " + string.Join("\n  - ", problems));
            using var _ = no_grad();
            foreach (var (name, p) in expected)
            {
                using var t = where[name].Read(name);
                using var cast = t.to(p.dtype);
                p.copy_(cast);
            }
        }
        finally { foreach (var f in files_) f.Dispose(); }
    }

    /// <summary>Writes config.json and model.safetensors (tensors in the model's dtype). Both writes are atomic.</summary>
    public static void Save(Qwen3ForCausalLM model, string dir, ScalarType? storeAs = null)
    {
        Directory.CreateDirectory(dir);
        var dtypeName = (storeAs ?? model.DType) == ScalarType.BFloat16 ? "bfloat16" : "float32";
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), (model.Config with { TorchDtype = dtypeName }).ToJson());
        var sd = model.state_dict();
        var tensors = sd.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, storeAs is { } s ? kv.Value.to(s) : kv.Value)).ToList();
        SafetensorsFile.Save(Path.Combine(dir, WeightsFile), tensors);
    }
}
