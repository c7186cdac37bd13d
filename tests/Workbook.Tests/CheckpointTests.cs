using System.Text;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class CheckpointTests
{
    static string CopyGolden(string name)
    {
        var dst = TestData.TempDir();
        foreach (var f in Directory.GetFiles(Path.Combine(TestData.Golden, name)))
            if (!f.EndsWith("tokenizer.json"))
                File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    static WorkbookException Fails(Action a) => Assert.Throws<WorkbookException>(a);

    [Fact]
    public void Save_then_load_round_trips_exactly_in_both_dtypes()
    {
        var m = Checkpoint.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"), ScalarType.BFloat16);
        var dir = TestData.TempDir();
        Checkpoint.Save(m, dir);
        // bytes of the stored bf16 tensors are unchanged from the original file
        using (var a = SafetensorsFile.Open(Path.Combine(TestData.Golden, "tiny-qwen3-bf16", "model.safetensors")))
        using (var b = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
        {
            Assert.Equal(a.Entries.Keys.OrderBy(k => k), b.Entries.Keys.OrderBy(k => k));
            foreach (var k in a.Entries.Keys)
            {
                using var x = a.Read(k);
                using var y = b.Read(k);
                Assert.Equal("BF16", b.Entries[k].DType);
                Assert.True(x.bytes.SequenceEqual(y.bytes), k);
            }
        }
        var m2 = Checkpoint.Load(dir, ScalarType.Float32);
        var sd1 = m.state_dict();
        var sd2 = m2.state_dict();
        foreach (var (k, v) in sd1)
            Assert.True(v.to(ScalarType.Float32).equal(sd2[k]).all().item<bool>(), k);
        Assert.DoesNotContain(Directory.GetFiles(dir), f => f.EndsWith(".tmp"));
    }

    [Fact]
    public void A_tensor_of_the_stored_dtype_is_read_in_place_and_any_other_is_left_alone()
    {
        var path = Path.Combine(TestData.Golden, "tiny-qwen3-bf16", "model.safetensors");
        using var f = SafetensorsFile.Open(path);
        var name = f.Entries.Keys.First(k => k.EndsWith("q_proj.weight"));
        using var stored = f.Read(name);
        using var into = zeros(stored.shape, dtype: ScalarType.BFloat16);
        Assert.True(f.TryReadInto(name, into));
        Assert.True(into.bytes.SequenceEqual(stored.bytes), "the in-place read differs from Read");
        using var f32 = zeros(stored.shape, dtype: ScalarType.Float32);
        using var wrongShape = zeros([stored.shape[0] + 1, stored.shape[1]], dtype: ScalarType.BFloat16);
        using var strided = zeros([stored.shape[1], stored.shape[0]], dtype: ScalarType.BFloat16).t();
        foreach (var t in new[] { f32, wrongShape, strided })
        {
            Assert.False(f.TryReadInto(name, t));
            Assert.Equal(0, t.count_nonzero().item<long>());
        }
        Assert.Contains("no tensor 'nope'", Fails(() => f.TryReadInto("nope", into)).Message);
        // a loaded model skips the random initialisation its weights would overwrite: the same weights either way
        var loaded = Checkpoint.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"), ScalarType.BFloat16);
        Assert.True(loaded.state_dict()[name].equal(stored).all().item<bool>());
    }

    [Fact]
    public void Sharded_checkpoints_load_through_the_index()
    {
        var src = Path.Combine(TestData.Golden, "tiny-qwen3-untied");
        var m = Checkpoint.Load(src);
        var dir = TestData.TempDir();
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(dir, "config.json"));
        var sd = m.state_dict().ToList();
        var half = sd.Count / 2;
        SafetensorsFile.Save(Path.Combine(dir, "model-00001-of-00002.safetensors"), sd.Take(half));
        SafetensorsFile.Save(Path.Combine(dir, "model-00002-of-00002.safetensors"), sd.Skip(half));
        var map = string.Join(
            ",",
            sd.Select((kv, i) => $"\"{kv.Key}\":\"model-0000{(i < half ? 1 : 2)}-of-00002.safetensors\"")
        );
        File.WriteAllText(
            Path.Combine(dir, "model.safetensors.index.json"),
            $"{{\"metadata\":{{}},\"weight_map\":{{{map}}}}}"
        );
        var m2 = Checkpoint.Load(dir);
        foreach (var (k, v) in m.state_dict())
            Assert.True(v.equal(m2.state_dict()[k]).all().item<bool>(), k);
    }

    [Fact]
    public void Tied_checkpoint_with_an_lm_head_copy_is_accepted()
    {
        var dir = CopyGolden("tiny-qwen3-bf16");
        var path = Path.Combine(dir, "model.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        using (var f = SafetensorsFile.Open(path))
            foreach (var k in f.Entries.Keys)
                tensors[k] = f.Read(k);
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone();
        SafetensorsFile.Save(path, tensors);
        // the copy is skipped: the loaded model is the tied model, with the same weights as without the copy
        using var withCopy = Checkpoint.Load(dir);
        using var original = Checkpoint.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"));
        Assert.Null(withCopy.lm_head);
        var expected = original.state_dict();
        var loaded = withCopy.state_dict();
        Assert.Equal(expected.Keys.Order(), loaded.Keys.Order());
        foreach (var (k, v) in expected)
            Assert.True(v.equal(loaded[k]).all().item<bool>(), k);
    }

    [Fact]
    public void Truncated_file_is_a_clear_error()
    {
        var dir = CopyGolden("tiny-qwen3-untied");
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Fails(() => Checkpoint.Load(dir));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
        File.WriteAllBytes(path, bytes[..4]);
        Assert.Contains("truncated", Fails(() => Checkpoint.Load(dir)).Message);
    }

    [Fact]
    public void Header_claiming_more_bytes_than_the_file_has_is_an_error_not_an_allocation()
    {
        var dir = CopyGolden("tiny-qwen3-untied");
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        BitConverter.GetBytes((ulong)long.MaxValue).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("out of range", Fails(() => Checkpoint.Load(dir)).Message);
        BitConverter.GetBytes((ulong)(bytes.Length + 10)).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("truncated", Fails(() => Checkpoint.Load(dir)).Message);
    }

    [Fact]
    public void Wrong_shape_missing_and_unexpected_tensors_are_reported_together()
    {
        var dir = CopyGolden("tiny-qwen3-untied");
        var path = Path.Combine(dir, "model.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        using (var f = SafetensorsFile.Open(path))
            foreach (var k in f.Entries.Keys)
                tensors[k] = f.Read(k);
        tensors.Remove("model.layers.1.mlp.up_proj.weight");
        tensors["model.layers.0.self_attn.q_proj.weight"] = zeros(3, 5);
        tensors["model.layers.9.extra.weight"] = zeros(2);
        SafetensorsFile.Save(path, tensors);
        var msg = Fails(() => Checkpoint.Load(dir)).Message;
        Assert.Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'", msg);
        Assert.Contains("'model.layers.0.self_attn.q_proj.weight' has shape [3,5]", msg);
        Assert.Contains("unexpected tensor 'model.layers.9.extra.weight'", msg);
    }

    [Fact]
    public void Pickle_checkpoints_are_refused()
    {
        var dir = TestData.TempDir();
        File.Copy(Path.Combine(TestData.Golden, "tiny-qwen3-untied", "config.json"), Path.Combine(dir, "config.json"));
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02, 0x7d]);
        Assert.Contains("pickle", Fails(() => Checkpoint.Load(dir)).Message);
        Assert.Contains("pickle", Fails(() => Checkpoint.Load(Path.Combine(dir, "pytorch_model.bin"))).Message);
    }

    [Fact]
    public void Garbage_header_is_a_clear_error()
    {
        var dir = CopyGolden("tiny-qwen3-untied");
        var path = Path.Combine(dir, "model.safetensors");
        var header = Encoding.UTF8.GetBytes("{not json}     ");
        File.WriteAllBytes(path, BitConverter.GetBytes((ulong)header.Length).Concat(header).ToArray());
        Assert.Contains("not valid JSON", Fails(() => Checkpoint.Load(dir)).Message);
    }
}

public class ConfigTests
{
    static string WriteConfig(string json)
    {
        var dir = TestData.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), json);
        return Path.Combine(dir, "config.json");
    }

    static string Golden => File.ReadAllText(Path.Combine(TestData.Golden, "tiny-qwen3-untied", "config.json"));

    [Fact]
    public void Reads_every_field_of_a_hf_config()
    {
        var c = Qwen3Config.Load(Path.Combine(TestData.Golden, "tiny-qwen3-untied", "config.json"));
        Assert.Equal(
            (151936, 32, 96, 3, 4, 2, 16),
            (
                c.VocabSize,
                c.HiddenSize,
                c.IntermediateSize,
                c.NumHiddenLayers,
                c.NumAttentionHeads,
                c.NumKeyValueHeads,
                c.HeadDim
            )
        );
        Assert.Equal(1e6, c.RopeTheta);
        Assert.Equal(1e-6, c.RmsNormEps);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(new[] { 151645 }, c.EosTokenIds);
        Assert.Equal(151643, c.BosTokenId);
        Assert.Equal("float32", c.TorchDtype);
    }

    [Theory]
    [InlineData("{", "not valid JSON")]
    [InlineData("[1,2]", "expected a JSON object")]
    [InlineData("{\"model_type\":\"qwen3\",\"hidden_size\":64}", "missing required field(s): vocab_size")]
    public void Malformed_configs_name_the_file_and_problem(string json, string expect)
    {
        var path = WriteConfig(json);
        var e = Assert.Throws<WorkbookException>(() => Qwen3Config.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(expect, e.Message);
    }

    [Theory]
    [InlineData("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "num_key_value_heads")]
    [InlineData("\"head_dim\": 16", "\"head_dim\": 15", "head_dim")]
    [InlineData("\"model_type\": \"qwen3\"", "\"model_type\": \"llama\"", "model_type")]
    [InlineData("\"hidden_size\": 32", "\"hidden_size\": \"big\"", "hidden_size")]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\"}", "rope_scaling")]
    public void Invalid_values_name_the_field(string from, string to, string field)
    {
        var path = WriteConfig(Golden.Replace(from, to));
        var e = Assert.Throws<WorkbookException>(() => Qwen3Config.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(field, e.Message);
    }

    [Fact]
    public void Qwen3_0_6B_preset_has_the_published_parameter_count()
    {
        Assert.Equal(596_049_920L, Qwen3Config.Qwen3_0_6B.ParameterCount());
        Assert.Equal(
            Qwen3Config.Load(Path.Combine(TestData.Golden, "tiny-qwen3-untied", "config.json")).ParameterCount(),
            Checkpoint.Load(Path.Combine(TestData.Golden, "tiny-qwen3-untied")).ParameterCount()
        );
    }
}
