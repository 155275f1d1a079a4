using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>Changes an embedded data file as another program would (a damaged row, a trigger refusing writes).</summary>
public static class DataFileSql
{
    /// <param name="state">Bound to <c>$state</c> when given (a row's state written as raw text).</param>
    public static void Execute(string path, string sql, string? state = null)
    {
        using var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        if (state is not null)
        {
            command.Parameters.AddWithValue("$state", state);
        }

        command.ExecuteNonQuery();
    }
}
