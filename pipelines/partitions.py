from dagster import DynamicPartitionsDefinition

#: One partition per room; the key is the room id. Rooms are added by the demo, the API and
#: the event sensor; the ``room_purge`` job removes a deleted room's partition.
rooms_partitions = DynamicPartitionsDefinition(name="rooms")
