using System.Text.Json;
using TorchSharp;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>The model against ../shared/golden: float64 references from a numpy transcription of transformers' Qwen3,
/// confirmed by llama.cpp. Tolerances are those of the golden README (abs 1e-4 for float32 compute).</summary>
public class GoldenModelTests
{
    static readonly Dictionary<string, Qwen3ForCausalLM> Models = new();

    static Qwen3ForCausalLM Load(string name)
    {
        lock (Models)
        {
            if (!Models.TryGetValue(name, out var m))
            {
                Models[name] = m = Checkpoint.Load(Path.Combine(TestData.Golden, name), ScalarType.Float32);
                // shared by the class's tests: out of the loading test's scope (TorchScopePerTest)
                foreach (var t in m.parameters().Concat(m.buffers()))
                    t.DetachFromDisposeScope();
            }
            return m;
        }
    }

    static int[] SequenceIds(string seq)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestData.Golden, "sequences.json")));
        return doc
            .RootElement.EnumerateArray()
            .First(e => e.GetProperty("name").GetString() == seq)
            .GetProperty("ids")
            .EnumerateArray()
            .Select(x => x.GetInt32())
            .ToArray();
    }

    static float[,] Logits(Qwen3ForCausalLM m, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        var logits = m.Forward(x)[0].contiguous();
        var flat = logits.data<float>().ToArray();
        int L = ids.Length,
            V = (int)logits.shape[1];
        var r = new float[L, V];
        Buffer.BlockCopy(flat, 0, r, 0, flat.Length * 4);
        return r;
    }

    public static IEnumerable<object[]> Cases() =>
        from model in new[] { "tiny-qwen3-bf16", "tiny-qwen3-untied" }
        from seq in new[] { "len1", "len9", "len48", "len200" }
        select new object[] { model, seq };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Logits_match_reference(string modelName, string seq)
    {
        var m = Load(modelName);
        var ids = SequenceIds(seq);
        var logits = Logits(m, ids);
        int L = ids.Length,
            V = logits.GetLength(1);
        var dir = Path.Combine(TestData.Golden, "logits", modelName);

        // every position at the 1024 reference columns
        var cols = TestData.ReadNpyI32(Path.Combine(TestData.Golden, "logits", "columns.npy"));
        var (cshape, cdata) = TestData.ReadNpyF32(Path.Combine(dir, $"{seq}.cols.npy"));
        Assert.Equal(new[] { L, cols.Length }, cshape);
        double maxCol = 0;
        for (int t = 0; t < L; t++)
        for (int j = 0; j < cols.Length; j++)
            maxCol = Math.Max(maxCol, Math.Abs(logits[t, cols[j]] - cdata[t * cols.Length + j]));
        Assert.True(maxCol <= 1e-4, $"max |logit diff| at columns = {maxCol}");

        // complete rows
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, $"{seq}.json")));
        var root = doc.RootElement;
        var fullRows = root.GetProperty("full_rows").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var (fshape, fdata) = TestData.ReadNpyF32(Path.Combine(dir, $"{seq}.full.npy"));
        Assert.Equal(V, fshape[1]);
        double maxFull = 0;
        for (int r = 0; r < fullRows.Length; r++)
        for (int v = 0; v < V; v++)
            maxFull = Math.Max(maxFull, Math.Abs(logits[fullRows[r], v] - fdata[r * V + v]));
        Assert.True(
            maxFull <= 3e-5,
            $"max |logit diff| on full rows = {maxFull} (3e-5 also catches a missing RMSNorm eps)"
        );

        // argmax, logsumexp, next-token logprob per position
        var argmax = root.GetProperty("argmax").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var lse = root.GetProperty("logsumexp").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        var ntl = root.GetProperty("next_token_logprob").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        double sum = 0;
        for (int t = 0; t < L; t++)
        {
            int best = 0;
            double mx = double.NegativeInfinity;
            for (int v = 0; v < V; v++)
                if (logits[t, v] > mx)
                {
                    mx = logits[t, v];
                    best = v;
                }
            double s = 0;
            for (int v = 0; v < V; v++)
                s += Math.Exp(logits[t, v] - mx);
            double l = mx + Math.Log(s);
            Assert.Equal(argmax[t], best);
            Assert.True(Math.Abs(l - lse[t]) <= 1e-4, $"logsumexp at {t}: {l} vs {lse[t]}");
            if (t + 1 < L)
            {
                double lp = logits[t, ids[t + 1]] - l;
                Assert.True(Math.Abs(lp - ntl[t]) <= 1e-4, $"next_token_logprob at {t}: {lp} vs {ntl[t]}");
                sum += lp;
            }
        }
        Assert.True(Math.Abs(sum - root.GetProperty("sum_next_token_logprob").GetDouble()) <= 1e-3);
    }

    [Theory]
    [InlineData("tiny-qwen3-bf16")]
    [InlineData("tiny-qwen3-untied")]
    public void Greedy_tokens_match_reference_through_the_kv_cache(string modelName)
    {
        var m = Load(modelName);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestData.Golden, "greedy.json")));
        var g = doc.RootElement.GetProperty(modelName).GetProperty("greedy_chat");
        var prompt = g.GetProperty("prompt").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var expected = g.GetProperty("generated_numpy64").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var outp = Generation.Generate(
            m,
            [prompt],
            new GenerationOptions { Greedy = true, MaxNewTokens = expected.Length }
        );
        Assert.Equal(expected, outp[0].Tokens);
        Assert.True(outp[0].Truncated);

        // per-step logits at the reference columns
        var cols = TestData.ReadNpyI32(Path.Combine(TestData.Golden, "logits", "columns.npy"));
        var (_, steps) = TestData.ReadNpyF32(
            Path.Combine(TestData.Golden, "logits", modelName, "greedy_chat.steps_cols.npy")
        );
        var full = Logits(m, prompt.Concat(expected).ToArray());
        for (int s = 0; s < expected.Length; s++)
        for (int j = 0; j < cols.Length; j++)
            Assert.True(Math.Abs(full[prompt.Length - 1 + s, cols[j]] - steps[s * cols.Length + j]) <= 1e-4);
    }

    [Fact]
    public void Kv_cache_decoding_equals_full_recomputation()
    {
        var m = Load("tiny-qwen3-untied");
        var ids = SequenceIds("len48");
        var full = Logits(m, ids);
        using var _ = no_grad();
        using var cache = m.NewCache(1, ids.Length);
        // prefill 20 tokens, then one at a time, then a chunk of 3
        int pos = 0;
        foreach (var chunk in new[] { 20 }.Concat(Enumerable.Repeat(1, 25)).Append(3))
        {
            using var scope = NewDisposeScope();
            var x = tensor(ids.Skip(pos).Take(chunk).Select(i => (long)i).ToArray(), [1, chunk]);
            var logits = m.Forward(x, cache: cache)[0];
            var got = logits.data<float>().ToArray();
            int V = (int)logits.shape[1];
            for (int t = 0; t < chunk; t++)
            {
                double mx = 0;
                for (int v = 0; v < V; v++)
                    mx = Math.Max(mx, Math.Abs(got[t * V + v] - full[pos + t, v]));
                Assert.True(mx <= 2e-5, $"position {pos + t}: cached vs full max diff {mx}");
            }
            pos += chunk;
        }
        Assert.Equal(ids.Length, pos);
    }

    [Theory]
    [InlineData(131072, 128)] // V·d = 2^24: a decoding step takes W·hᵀ (Qwen3ForCausalLM.BigHead)
    [InlineData(4096, 128)] // below it: h·Wᵀ, as in training
    public void A_decoding_steps_logits_equal_the_full_forwards_last_position(int vocab, int hidden)
    {
        var cfg = Qwen3Config.Tiny(vocab) with { HiddenSize = hidden, IntermediateSize = 2 * hidden };
        Assert.Equal(vocab == 131072, (long)vocab * hidden >= Qwen3ForCausalLM.BigHead);
        using var m = new Qwen3ForCausalLM(cfg, seed: 11);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        var ids = randint(0, vocab, [8, 9], generator: g); // a batch of 8, as GRPO's rollouts decode
        var last = m.Forward(ids, lastOnly: true);
        var full = m.Forward(ids).select(1, -1);
        Assert.Equal(full.shape, last.shape);
        Assert.True(last.is_contiguous());
        double diff = (last - full).abs().max().item<float>(),
            scale = full.abs().max().item<float>();
        Assert.True(diff <= 1e-5 * Math.Max(1, scale), $"max diff {diff} at scale {scale}");
        Assert.True(last.argmax(-1).eq(full.argmax(-1)).all().item<bool>());
    }

    [Theory]
    [InlineData(2, 50021)]
    [InlineData(3, 50021)]
    [InlineData(4, 4096)]
    [InlineData(2, 100)] // a whole 64-row block and the rest
    [InlineData(4, 3)] // fewer rows than threads: one call
    public void A_one_row_decoding_head_split_over_threads_equals_one_call_bit_for_bit(int threads, int vocab)
    {
        using var _ = no_grad();
        var w = TestData.Randn([vocab, 96], seed: 6);
        var one = TestData.Randn([1, 96], seed: 7);
        var eight = TestData.Randn([8, 96], seed: 8);
        foreach (var h in new[] { one, eight }) // one row is split over the threads, eight rows are one call
        {
            var split = Qwen3ForCausalLM.StreamedLogits(w, h, threads);
            var single = w.matmul(h.t()).t();
            Assert.Equal(single.shape, split.shape);
            Assert.True(split.is_contiguous());
            Assert.True(single.equal(split).all().item<bool>());
        }
    }

    [Fact]
    public void One_row_greedy_decoding_on_one_torch_thread_picks_the_full_forwards_argmax()
    {
        // a streamed head at one row: the decoding steps run on one torch thread, the head split over the others.
        // This thread is given two torch threads (its own counts only), so the path runs whatever the host's count
        Assert.True(OneTorchThread.Available, "libgomp's and oneMKL's thread-count symbols were not found");
        using var two = OneTorchThread.OnThisThread(2);
        var cfg = Qwen3Config.Tiny(131072) with { HiddenSize = 128, IntermediateSize = 256 };
        using var m = new Qwen3ForCausalLM(cfg, seed: 12);
        Assert.True(m.StreamsHead);
        int[] prompt = [5, 17, 99, 4000, 120000];
        Assert.Equal(2, get_num_threads());
        long before = Generation.OneRowStepsOnThisThread;
        var got = Generation.Generate(m, [prompt], new GenerationOptions { Greedy = true, MaxNewTokens = 6 })[0];
        Assert.Equal(5, Generation.OneRowStepsOnThisThread - before); // the steps after the prefill
        Assert.Equal((2, 2), OneTorchThread.CountsOnThisThread()); // the calling thread's counts are back
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var ids = prompt.Select(i => (long)i).ToList();
        for (int t = 0; t < 6; t++)
        {
            var logits = m.Forward(tensor(ids.ToArray(), [1, ids.Count])).select(1, -1);
            long next = logits.argmax(-1).item<long>();
            Assert.Equal(next, got.Tokens[t]);
            var logp = logits.log_softmax(-1)[0, next].item<float>();
            Assert.True(Math.Abs(logp - got.LogProbs[t]) <= 1e-4, $"step {t}: {logp} against {got.LogProbs[t]}");
            ids.Add(next);
        }
    }

    [Fact]
    public void One_torch_thread_is_this_threads_and_is_given_back()
    {
        Assert.Equal(OperatingSystem.IsLinux(), OneTorchThread.Available);
        if (!OneTorchThread.Available)
            return;
        // on a fresh thread, whose counts ATen sets lazily at its first torch call: set before that call, they hold.
        // k: a count other than the process's. The process's count is set as a run sets it (ExperimentRunner), to
        // the same value: after that, ATen's lazy setting gives a fresh thread the process's count, not its own
        int process = get_num_threads(),
            k = process + 1;
        set_num_threads(process);
        (int, int)? atK = null,
            inside = null,
            backToK = null,
            other = null,
            after = null;
        int torchK = 0,
            torchInside = 0;
        var t = new Thread(() =>
        {
            using (var kThreads = OneTorchThread.OnThisThread(k))
            {
                torchK = get_num_threads();
                atK = OneTorchThread.CountsOnThisThread();
                using (var one = OneTorchThread.OnThisThread())
                {
                    torchInside = get_num_threads();
                    inside = OneTorchThread.CountsOnThisThread();
                    var o = new Thread(() =>
                    {
                        _ = get_num_threads();
                        other = OneTorchThread.CountsOnThisThread();
                    });
                    o.Start();
                    o.Join();
                }
                backToK = OneTorchThread.CountsOnThisThread();
            }
            after = OneTorchThread.CountsOnThisThread();
        });
        t.Start();
        t.Join();
        Assert.Equal(k, torchK);
        Assert.Equal((k, k), atK);
        Assert.Equal(1, torchInside);
        Assert.Equal((1, 1), inside);
        Assert.Equal((k, k), backToK);
        Assert.Equal(process, after?.Item1); // the process's count again
        Assert.Equal(other, after); // a thread started meanwhile has the process's counts, as this one after
    }

    [Fact]
    public void Left_padded_batch_equals_each_sequence_alone()
    {
        var m = Load("tiny-qwen3-untied");
        int[] a = SequenceIds("len9"),
            b = SequenceIds("len48").Take(30).ToArray();
        var fa = Logits(m, a);
        var fb = Logits(m, b);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int P = b.Length,
            pad = P - a.Length;
        var ids = new long[2 * P];
        var mask = new long[2 * P];
        for (int t = 0; t < P; t++)
        {
            ids[t] = t < pad ? 151643 : a[t - pad];
            mask[t] = t < pad ? 0 : 1;
            ids[P + t] = b[t];
            mask[P + t] = 1;
        }
        var logits = m.Forward(tensor(ids, [2, P]), tensor(mask, [2, P]));
        int V = (int)logits.shape[2];
        var la = logits[0].data<float>().ToArray();
        double mx = 0;
        for (int t = 0; t < a.Length; t++)
        for (int v = 0; v < V; v += 7)
            mx = Math.Max(mx, Math.Abs(la[(pad + t) * V + v] - fa[t, v]));
        var lb = logits[1].data<float>().ToArray();
        for (int t = 0; t < P; t++)
        for (int v = 0; v < V; v += 7)
            mx = Math.Max(mx, Math.Abs(lb[t * V + v] - fb[t, v]));
        Assert.True(mx <= 2e-5, $"batched vs single max diff {mx}");

        // batched greedy generation with different prompt lengths equals one-at-a-time generation
        var opt = new GenerationOptions { Greedy = true, MaxNewTokens = 8 };
        var both = Generation.Generate(m, [a, b], opt);
        Assert.Equal(Generation.Generate(m, [a], opt)[0].Tokens, both[0].Tokens);
        Assert.Equal(Generation.Generate(m, [b], opt)[0].Tokens, both[1].Tokens);
    }
}
