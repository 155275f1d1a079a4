namespace HandoffDapr.Core.Model;

// The autofix run as the completion event (or the manual trigger's `run`) describes it.
// Every field but the run id may be missing: the autofix API is another team's code,
// so the core treats the snapshot as untrusted and null-tolerant.

public sealed record RunSnapshot(
    long RunId,
    long? OrganizationId = null,
    long? ProjectId = null,
    RunGroup? Group = null,
    RunMetadata? Metadata = null,
    RunArtifacts? Artifacts = null,
    HandoffPreferences? Preferences = null)
{
    /// <summary>The group the run belongs to: the group object wins, the metadata's copy is the fallback.</summary>
    /// <remarks>Not a field of the wire or stored form: it is read from those two.</remarks>
    [System.Text.Json.Serialization.JsonIgnore]
    public long? GroupId => Group?.Id ?? Metadata?.GroupId;

    /// <summary>Whether two snapshots say the same, field for field (their stored forms are byte for byte equal).</summary>
    public static bool SameContent(RunSnapshot left, RunSnapshot right) =>
        ReferenceEquals(left, right) || StoredForm(left).AsSpan().SequenceEqual(StoredForm(right));

    /// <summary>A short digest of the stored form: two snapshots that say the same have the same one.</summary>
    public static string ContentDigest(RunSnapshot snapshot) =>
        Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(StoredForm(snapshot)).AsSpan(0, 16));

    private static byte[] StoredForm(RunSnapshot snapshot) =>
        System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(snapshot, Serialization.HandoffJsonContext.Default.RunSnapshot);
}

public sealed record RunGroup(long? Id = null, string? Title = null, string? ShortId = null);

public sealed record RunMetadata(string? StoppingPoint = null, long? GroupId = null);

public sealed record RunArtifacts(RootCauseArtifact? RootCause = null, SolutionArtifact? Solution = null);

public sealed record RootCauseArtifact(
    string? OneLineDescription = null,
    IReadOnlyList<string?>? FiveWhys = null,
    IReadOnlyList<string?>? ReproductionSteps = null,
    string? RelevantRepo = null);

public sealed record SolutionArtifact(string? OneLineSummary = null, IReadOnlyList<SolutionStep?>? Steps = null);

public sealed record SolutionStep(string? Title = null, string? Description = null);

public sealed record HandoffPreferences(
    IReadOnlyList<RepositoryPreference?>? Repositories = null,
    AutomationHandoff? AutomationHandoff = null);

public sealed record RepositoryPreference(
    string? Provider = null,
    string? Owner = null,
    string? Name = null,
    string? BranchName = null);

public sealed record AutomationHandoff(
    string? HandoffPoint = null,
    string? Target = null,
    long? IntegrationId = null,
    bool? AutoCreatePr = null);
