using System.Text.Json;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class HandoffJsonContextTests
{

    [Fact]
    public void Snapshot_property_names_are_read_in_any_letter_case()
    {
        var snapshot = JsonSerializer.Deserialize("""{"RUN_ID":5,"Group":{"Id":6}}""", HandoffJsonContext.Default.RunSnapshot);

        Assert.Equal(5, snapshot!.RunId);
        Assert.Equal(6, snapshot.GroupId);
    }
}
