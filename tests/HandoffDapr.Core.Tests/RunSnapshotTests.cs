using System.Text.Json;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class RunSnapshotTests
{
    [Fact]
    public void Group_id_is_the_group_objects_and_the_metadata_copy_only_a_fallback()
    {
        Assert.Equal(5, new RunSnapshot(1, Group: new RunGroup(5), Metadata: new RunMetadata(GroupId: 6)).GroupId);
        Assert.Equal(6, new RunSnapshot(1, Group: new RunGroup(Title: "t"), Metadata: new RunMetadata(GroupId: 6)).GroupId);
        Assert.Null(new RunSnapshot(1).GroupId);
    }

    [Fact]
    public void Group_id_is_not_written_as_a_field_of_its_own()
    {
        var json = JsonSerializer.SerializeToElement(new RunSnapshot(1, Group: new RunGroup(5)), HandoffJsonContext.Default.RunSnapshot);

        Assert.False(json.TryGetProperty("group_id", out _));
        Assert.Equal(5, json.GetProperty("group").GetProperty("id").GetInt64());
    }
}
