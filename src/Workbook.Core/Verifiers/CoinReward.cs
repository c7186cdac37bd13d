// The null reward: a fresh coin for every sampled completion, independent of what the completion says. Its expectation
// E[r | x, y] = p is the same for every response, so the KL-regularised optimum is the reference policy itself and
// Theorem 3.1 predicts no SFT-loss rise at all: whatever RL moves under it is optimisation noise (the null control of
// the sweep and of `task.reward=coin`). A hash of the completion would not do: a fixed random function of y is a real
// reward that RL can learn, and its optimum moves.
namespace Workbook.Verifiers;

public sealed class CoinReward(double p = 0.5) : IVerifier
{
    /// <summary>P(r = 1). 0.5 gives every group the largest reward variance.</summary>
    public double P { get; } = p is > 0 and < 1 ? p : throw new WorkbookException($"coin reward: p {p} not in (0, 1)");

    public string Name => "coin";

    /// <summary>The coin needs the sampler's seeded stream (the trainer draws it per step, so a resumed run draws the
    /// same coins); scoring a text has no meaning for it.</summary>
    public VerifierResult Score(string prompt, string completion, string reference) =>
        throw new InvalidOperationException(
            "the coin reward is drawn by the GRPO trainer (Draw), not scored from text"
        );

    /// <summary>The coins of one GRPO step: n draws from a stream seeded by (stage seed, step).</summary>
    public double[] Draw(long seed, long step, int n)
    {
        // splitmix64 of (seed, step): HashCode.Combine is salted per process, so it would not reproduce
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step + 0x5EEDUL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        var rng = new Random((int)((z ^ (z >> 31)) & 0x7FFFFFFF));
        return Enumerable.Range(0, n).Select(_ => rng.NextDouble() < P ? 1.0 : 0.0).ToArray();
    }
}
