namespace Workbook.Training;

/// <summary>What callers (the experiment runner, `train`, tests) need of any trainer.</summary>
public interface ITrainer
{
    /// <summary>Extra fields written on every metrics line (for instance the experiment stage).</summary>
    Dictionary<string, object> LogFields { get; }
    event Action<long, IReadOnlyDictionary<string, double>>? OnLog;

    /// <summary>Called after every step (tests use it to stop a run midway).</summary>
    Action<long>? AfterStep { get; set; }
    TrainerState Train(bool resume = false);

    /// <summary>Record this stage's trajectory for a stage that will replay it (StageReplay.cs).</summary>
    StageRecording? RecordInto { get; set; }

    /// <summary>Replay this recorded trajectory instead of training, when the replay is exact.</summary>
    StageRecording? ReplayFrom { get; set; }

    /// <summary>Whether the last Train replayed instead of training.</summary>
    bool Replayed { get; }
}
