using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// A save as the release before handled-event digests and stored views made it, on a file a newer release also uses
/// (a hand-over): state and version only, every newer column left as it was.
/// </summary>
public static class EarlierRelease
{
    public static async Task SaveAsync(string dataPath, RunHandoffState state, long expectedVersion)
    {
        await using var connection = new SqliteConnection($"Data Source={dataPath};Pooling=False");
        await connection.OpenAsync();
        await using var update = connection.CreateCommand();
        update.CommandText = "UPDATE runs SET group_id = $group, version = version + 1, state = $state, updated_at = $now WHERE run_id = $run AND version = $version";
        update.Parameters.AddWithValue("$group", (object?)state.GroupId ?? DBNull.Value);
        update.Parameters.AddWithValue("$state", JsonSerializer.SerializeToUtf8Bytes(state, HandoffJsonContext.Default.RunHandoffState));
        update.Parameters.AddWithValue("$now", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        update.Parameters.AddWithValue("$run", state.RunId);
        update.Parameters.AddWithValue("$version", expectedVersion);
        if (await update.ExecuteNonQueryAsync() != 1)
        {
            throw new InvalidOperationException($"Run {state.RunId} is not at version {expectedVersion}.");
        }
    }
}
