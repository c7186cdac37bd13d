using System.Text.Json;
using System.Text.Json.Serialization;

namespace Workbook.Model;

/// <summary>
/// The Qwen3 architecture hyper-parameters, read from (and written as) a Hugging Face <c>config.json</c>.
/// Field names follow the JSON keys so a config round-trips unchanged. Presets: the exact Qwen3-0.6B values and small
/// CPU-sized shapes with the same architecture.
/// </summary>
public sealed record Qwen3Config
{
    [JsonPropertyName("model_type")]
    public string ModelType { get; init; } = "qwen3";

    [JsonPropertyName("architectures")]
    public string[] Architectures { get; init; } = ["Qwen3ForCausalLM"];

    [JsonPropertyName("vocab_size")]
    public int VocabSize { get; init; }

    [JsonPropertyName("hidden_size")]
    public int HiddenSize { get; init; }

    [JsonPropertyName("intermediate_size")]
    public int IntermediateSize { get; init; }

    [JsonPropertyName("num_hidden_layers")]
    public int NumHiddenLayers { get; init; }

    [JsonPropertyName("num_attention_heads")]
    public int NumAttentionHeads { get; init; }

    [JsonPropertyName("num_key_value_heads")]
    public int NumKeyValueHeads { get; init; }

    [JsonPropertyName("head_dim")]
    public int HeadDim { get; init; }

    [JsonPropertyName("hidden_act")]
    public string HiddenAct { get; init; } = "silu";

    [JsonPropertyName("rope_theta")]
    public double RopeTheta { get; init; } = 1_000_000;

    [JsonPropertyName("rope_scaling")]
    public JsonElement? RopeScaling { get; init; }

    [JsonPropertyName("rms_norm_eps")]
    public double RmsNormEps { get; init; } = 1e-6;

    [JsonPropertyName("tie_word_embeddings")]
    public bool TieWordEmbeddings { get; init; }

    [JsonPropertyName("max_position_embeddings")]
    public int MaxPositionEmbeddings { get; init; } = 40960;

    [JsonPropertyName("torch_dtype")]
    public string? TorchDtype { get; init; } = "bfloat16";

    [JsonPropertyName("bos_token_id")]
    public int? BosTokenId { get; init; } = 151643;

    [JsonPropertyName("eos_token_id")]
    public JsonElement? EosTokenIdRaw { get; init; }

    [JsonPropertyName("attention_bias")]
    public bool AttentionBias { get; init; }

    [JsonPropertyName("attention_dropout")]
    public double AttentionDropout { get; init; }

    [JsonPropertyName("use_sliding_window")]
    public bool UseSlidingWindow { get; init; }

    [JsonPropertyName("sliding_window")]
    public int? SlidingWindow { get; init; }

    [JsonPropertyName("max_window_layers")]
    public int? MaxWindowLayers { get; init; }

    [JsonPropertyName("initializer_range")]
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>End-of-sequence ids (a config may give one id or a list).</summary>
    [JsonIgnore]
    public int[] EosTokenIds =>
        EosTokenIdRaw is { } e
            ? e.ValueKind == JsonValueKind.Array
                ? e.EnumerateArray().Select(x => x.GetInt32()).ToArray()
                : e.ValueKind == JsonValueKind.Number
                    ? [e.GetInt32()]
                    : []
            : [];

    public long ParameterCount()
    {
        long d = HiddenSize,
            qd = (long)NumAttentionHeads * HeadDim,
            kvd = (long)NumKeyValueHeads * HeadDim;
        long bias = AttentionBias ? qd + 2 * kvd + d : 0;
        long layer = d * qd + 2 * d * kvd + qd * d + bias + 2L * HeadDim + 3 * d * IntermediateSize + 2 * d;
        return (long)VocabSize * d * (TieWordEmbeddings ? 1 : 2) + NumHiddenLayers * layer + d;
    }

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads and validates a Hugging Face config.json; every problem names the file and field.</summary>
    public static Qwen3Config Load(string path)
    {
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: config.json not found");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new WorkbookException($"{path}: not valid JSON ({e.Message})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new WorkbookException($"{path}: expected a JSON object");
            string[] required =
            [
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
            ];
            var missing = required
                .Where(k => !root.TryGetProperty(k, out var v) || v.ValueKind == JsonValueKind.Null)
                .ToList();
            if (missing.Count > 0)
                throw new WorkbookException($"{path}: missing required field(s): {string.Join(", ", missing)}");
            Qwen3Config c;
            try
            {
                c = root.Deserialize<Qwen3Config>()!;
            }
            catch (JsonException e)
            {
                throw new WorkbookException(
                    $"{path}: field {e.Path?.TrimStart('$', '.')} has the wrong type ({e.Message})"
                );
            }
            // head_dim and num_key_value_heads default as in transformers when absent.
            if (!root.TryGetProperty("head_dim", out _) && c.NumAttentionHeads > 0)
                c = c with { HeadDim = c.HiddenSize / c.NumAttentionHeads };
            if (!root.TryGetProperty("num_key_value_heads", out _))
                c = c with { NumKeyValueHeads = c.NumAttentionHeads };
            if (!root.TryGetProperty("tie_word_embeddings", out _))
                c = c with { TieWordEmbeddings = true };
            c.Validate(path);
            return c;
        }
    }

    public void Validate(string source = "config")
    {
        void Fail(string field, string why) => throw new WorkbookException($"{source}: field {field}: {why}");
        if (ModelType != "qwen3")
            Fail("model_type", $"'{ModelType}' is not supported (only 'qwen3')");
        foreach (
            var (name, v) in new[]
            {
                ("vocab_size", VocabSize),
                ("hidden_size", HiddenSize),
                ("intermediate_size", IntermediateSize),
                ("num_hidden_layers", NumHiddenLayers),
                ("num_attention_heads", NumAttentionHeads),
                ("num_key_value_heads", NumKeyValueHeads),
                ("head_dim", HeadDim),
            }
        )
            if (v <= 0)
                Fail(name, $"must be a positive integer (got {v})");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            Fail("num_key_value_heads", $"{NumKeyValueHeads} does not divide num_attention_heads {NumAttentionHeads}");
        if (HeadDim % 2 != 0)
            Fail("head_dim", $"must be even for rotary embeddings (got {HeadDim})");
        if (HiddenAct != "silu")
            Fail("hidden_act", $"'{HiddenAct}' is not supported (only 'silu')");
        if (RmsNormEps <= 0)
            Fail("rms_norm_eps", "must be > 0");
        if (RopeTheta <= 0)
            Fail("rope_theta", "must be > 0");
        if (RopeScaling is { ValueKind: not JsonValueKind.Null })
            Fail("rope_scaling", "rope scaling is not supported (must be null)");
        if (UseSlidingWindow)
            Fail("use_sliding_window", "sliding-window attention is not supported (Qwen3 dense models do not use it)");
        if (MaxPositionEmbeddings <= 0)
            Fail("max_position_embeddings", $"must be a positive integer (got {MaxPositionEmbeddings})");
        if (
            EosTokenIdRaw is { } e
            && e.ValueKind != JsonValueKind.Null
            && !(e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _))
            && !(
                e.ValueKind == JsonValueKind.Array
                && e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out _))
            )
        )
            Fail("eos_token_id", $"must be an integer id or a list of them (got {e.GetRawText()})");
        // refuse a shape that cannot fit before anything is allocated (2 bytes per parameter is the smallest dtype)
        long bytes = ParameterCount() * 2,
            available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (bytes > available)
            Fail(
                "vocab_size/hidden_size/intermediate_size/num_hidden_layers",
                $"{ParameterCount():N0} parameters need at least "
                    + $"{bytes / (1L << 30):N0} GiB, more than this machine's {available / (1L << 30):N0} GiB"
            );
    }

    // ---- presets -------------------------------------------------------------------------------------------------

    /// <summary>Qwen3-0.6B exactly (596,049,920 parameters, tied embeddings).</summary>
    public static Qwen3Config Qwen3_0_6B =>
        new()
        {
            VocabSize = 151936,
            HiddenSize = 1024,
            IntermediateSize = 3072,
            NumHiddenLayers = 28,
            NumAttentionHeads = 16,
            NumKeyValueHeads = 8,
            HeadDim = 128,
            RopeTheta = 1_000_000,
            RmsNormEps = 1e-6,
            TieWordEmbeddings = true,
            MaxPositionEmbeddings = 40960,
            TorchDtype = "bfloat16",
            BosTokenId = 151643,
            EosTokenIdRaw = JsonSerializer.SerializeToElement(151645),
            MaxWindowLayers = 28,
        };

    /// <summary>The small CPU preset of the platform notes (4 layers, hidden 256); vocab is the task vocabulary
    /// size.</summary>
    public static Qwen3Config Small(int vocab = 4096) =>
        new()
        {
            VocabSize = vocab,
            HiddenSize = 256,
            IntermediateSize = 768,
            NumHiddenLayers = 4,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            HeadDim = 64,
            TieWordEmbeddings = true,
            MaxPositionEmbeddings = 4096,
            TorchDtype = "float32",
        };

    /// <summary>A very small shape for unit tests and quick runs.</summary>
    public static Qwen3Config Tiny(int vocab = 512) =>
        new()
        {
            VocabSize = vocab,
            HiddenSize = 64,
            IntermediateSize = 160,
            NumHiddenLayers = 2,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            HeadDim = 16,
            TieWordEmbeddings = true,
            MaxPositionEmbeddings = 2048,
            TorchDtype = "float32",
        };

    public static Qwen3Config Preset(string name, int? vocab = null) =>
        name.ToLowerInvariant() switch
        {
            "qwen3-0.6b" or "0.6b" => vocab is { } v ? Qwen3_0_6B with { VocabSize = v } : Qwen3_0_6B,
            "small" => Small(vocab ?? 4096),
            "tiny" => Tiny(vocab ?? 512),
            _ => throw new WorkbookException($"unknown preset '{name}': expected qwen3-0.6b, small or tiny"),
        };
}
