-- The presets read model's version (shared/preset_view.py). Every statement that writes presets.presets
-- (the service's RPCs, an import, a direct SQL write) bumps `revision` in the same transaction, so the
-- snapshot query can read the rows and the revision they belong to in one statement. `epoch` names this
-- database's counter: a snapshot from another counter (the database was recreated, the count restarted)
-- is replaced whatever its revision.
CREATE TABLE presets_revision (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision   bigint  NOT NULL DEFAULT 1,
    epoch      uuid    NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO presets_revision DEFAULT VALUES;

CREATE FUNCTION bump_presets_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE presets.presets_revision SET revision = revision + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER presets_revision_bump
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON presets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_presets_revision();
